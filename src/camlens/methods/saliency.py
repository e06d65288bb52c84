"""Pixel-level gradients: Saliency (vanilla input gradients) and SmoothGrad."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from camlens._checks import positive_float, positive_int, seed_int
from camlens._types import Array
from camlens.backends._common import namespace
from camlens.methods.base import Method


def gradient_magnitude(gradients: Array) -> Array:
    """Return the saliency map ``max_c |G_c|``, ``(M, H, W)``, of ``(M, C, H, W)`` gradients."""
    xp = namespace(gradients)
    return xp.max(xp.abs(gradients), axis=1)


class Saliency(Method):
    """Saliency map (Simonyan, Vedaldi & Zisserman, 2014, arXiv:1312.6034).

    The gradient of the target score with respect to the input pixels, its magnitude taken over
    colour channels: ``M_ij = max_c |dy / dx_cij|``. The map is at the input's resolution; it
    explains the input, so no layer is given (``layer=None``; ``exp.layers`` is
    ``("input",)``). The gradient is computed through the whole network, once per target.
    """

    name = "saliency"
    #: The explainer reads this method's activations and gradients at the model's input.
    pixel_level: ClassVar[bool] = True

    def cam(self, activations: Array, gradients: Array) -> Array:
        """Return ``max_c |G_c|`` (``activations`` are the input itself, unused)."""
        return gradient_magnitude(gradients)


class SmoothGrad(Saliency):
    """SmoothGrad (Smilkov et al., 2017, arXiv:1706.03825).

    The input gradient averaged over ``n`` noisy copies of the input, then its magnitude over
    colour channels: ``M = max_c |1/n sum_m dy/dx (x + e_m)|``, ``e_m ~ N(0, s^2)`` with
    ``s = noise_level * (max x - min x)`` per image (the paper's noise level; 10-20% works
    best there). As in the paper (and tf-keras-vis), the gradients are averaged before the
    absolute value is taken (the squared variant, SmoothGrad-Squared, is not offered). The
    explained units are those of the input itself. Noise is drawn in the ``(C, H, W)`` layout
    from ``seed`` per copy, the same for every image before it is scaled by that image's range
    (so a batch equals its images one by one, and a channels-last Keras model gets the same
    noise as its PyTorch twin). Cost: ``n`` forward and backward passes, plus one forward.

    Args:
        samples: Noisy copies (the paper's 50).
        noise_level: Noise standard deviation over each image's value range (the paper: 0.15).
        seed: Seed of the noise.
        batch_size: Noisy copies per forward and backward pass; ``None`` picks as many as the
            memory budget allows (the maps do not depend on it).
    """

    name = "smoothgrad"
    #: The explainer gives :meth:`cam_from_samples` the gradients of noisy copies of the input.
    noise_samples: ClassVar[bool] = True

    def __init__(
        self,
        *,
        samples: int = 50,
        noise_level: float = 0.15,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> None:
        """Validate and keep the hyper-parameters."""
        self.samples = positive_int(samples, "samples")
        self.noise_level = positive_float(noise_level, "noise_level")
        self.seed = seed_int(seed)
        self.batch_size = positive_int(batch_size, "batch_size", optional=True)

    def noise(self, shape: tuple[int, ...], sample: int) -> np.ndarray:
        """Return copy ``sample``'s unit-variance noise for one ``(C, H, W)`` image, float32."""
        rng = np.random.default_rng([self.seed, sample])
        return rng.standard_normal(size=shape).astype(np.float32)

    def noise_scale(self, images: np.ndarray) -> np.ndarray:
        """Return each image's noise standard deviation, shaped to broadcast over the batch."""
        flat = images.reshape(images.shape[0], -1)
        spread = flat.max(axis=1) - flat.min(axis=1)
        scale: np.ndarray = (self.noise_level * spread).reshape(-1, *([1] * (images.ndim - 1)))
        return scale

    def cam_from_samples(self, activations: Array, gradients: Sequence[Array]) -> Array:
        """Return ``max_c |mean_m G_m|`` from the ``(M, C, H, W)`` gradients of each copy."""
        mean = sum(gradients[1:], gradients[0]) / len(gradients)
        return gradient_magnitude(mean)

    def __repr__(self) -> str:
        return (
            f"SmoothGrad(samples={self.samples}, noise_level={self.noise_level}, seed={self.seed})"
        )
