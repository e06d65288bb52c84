"""Smooth Grad-CAM++."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from camlens._checks import positive_float, positive_int, seed_int
from camlens._types import Array
from camlens.backends._common import namespace
from camlens.methods.base import Method


class SmoothGradCAMPlusPlus(Method):
    """Smooth Grad-CAM++ (Omeiza et al., 2019, arXiv:1908.01224).

    Grad-CAM++ with its derivatives averaged over ``n`` noisy copies of the input,
    ``x + N(0, std^2)``: with ``g_m`` the layer gradients for copy ``m``, ``D^p = 1/n sum_m
    g_m^p``, the coefficients are ``a^k_ij = D^2 / (2 D^2 + sum_ab A^k_ab D^3)`` and
    ``w_k = sum_ij a^k_ij ReLU(D^1)``, ``L = ReLU(sum_k w_k A^k)``, ``A`` the activations of
    the input itself (whose target scores are explained). As camlens's Grad-CAM++, only exact
    zeros of the denominator are guarded, no epsilon.

    Deviations elsewhere: the paper prints ``D^1`` in the coefficient's numerator; its
    derivation (and torchcam) gives ``D^2``, used here. torchcam weighs by the last noisy
    copy's ``ReLU(g_n)`` instead of the mean ``ReLU(D^1)`` of the paper.

    Noise is drawn in the ``(C, H, W)`` layout from ``seed`` per copy, the same for every
    image (so a batch equals its images one by one, and a channels-last Keras model gets the
    same noise as its PyTorch twin); ``std`` is in the model's input units. Cost: ``n``
    forward and backward passes, plus one forward.

    Args:
        samples: Noisy copies (torchcam's default, 4).
        std: Standard deviation of the noise (torchcam's default, 0.3).
        seed: Seed of the noise.
        batch_size: Noisy copies per forward and backward pass; ``None`` picks as many as the
            memory budget allows (the maps do not depend on it).
    """

    name = "smoothgradcam++"
    #: The explainer gives :meth:`cam_from_samples` the gradients of noisy copies of the input.
    noise_samples: ClassVar[bool] = True

    def __init__(
        self, *, samples: int = 4, std: float = 0.3, seed: int = 0, batch_size: int | None = None
    ) -> None:
        """Validate and keep the hyper-parameters."""
        self.samples = positive_int(samples, "samples")
        self.std = positive_float(std, "std")
        self.seed = seed_int(seed)
        self.batch_size = positive_int(batch_size, "batch_size", optional=True)

    def noise(self, shape: tuple[int, ...], sample: int) -> np.ndarray:
        """Return copy ``sample``'s noise for one image of ``(C, H, W)`` shape, float32."""
        rng = np.random.default_rng([self.seed, sample])
        return rng.normal(0.0, self.std, size=shape).astype(np.float32)

    def cam(self, activations: Array, gradients: Array) -> Array:
        """Return the map from one set of gradients (Grad-CAM++ itself, ``n = 1``)."""
        return self.cam_from_samples(activations, [gradients])

    def cam_from_samples(self, activations: Array, gradients: Sequence[Array]) -> Array:
        """Return ``sum_k w_k A^k`` from the ``(M, K, h, w)`` gradients of each noisy copy."""
        xp = namespace(activations, gradients[0])
        n = len(gradients)
        d1 = sum(gradients[1:], gradients[0]) / n
        d2 = sum((g * g for g in gradients[1:]), gradients[0] * gradients[0]) / n
        d3 = sum((g * g * g for g in gradients[1:]), gradients[0] ** 3) / n
        total = xp.sum(activations, axis=(2, 3), keepdims=True)
        den = 2 * d2 + total * d3
        zero = den == 0
        alpha = xp.where(zero, xp.zeros_like(d2), d2 / xp.where(zero, xp.ones_like(den), den))
        w = xp.sum(alpha * xp.clip(d1, min=0.0), axis=(2, 3), keepdims=True)
        return xp.sum(w * activations, axis=1)

    def __repr__(self) -> str:
        return f"SmoothGradCAMPlusPlus(samples={self.samples}, std={self.std}, seed={self.seed})"
