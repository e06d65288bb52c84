"""The contract of gradient-free methods that score perturbed inputs (Score-CAM, Ablation-CAM...).

Such a method does its maths in :meth:`PerturbationMethod.cam_from_forwards`, reaching the model
only through a :class:`Forwards` object that the explainer binds to the backend, the inputs,
the target units and the layer. The backend batches the perturbed inputs to a memory budget,
keeps masks and inputs on the model's device and never builds all of them at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

import numpy as np
from array_api_compat import device

from camlens._checks import positive_int
from camlens._types import Array, Size
from camlens.backends._common import namespace, to_host
from camlens.backends.base import ScoreMode
from camlens.errors import BadInputError, MethodError
from camlens.methods.base import Method
from camlens.postprocess import normalise, resize

#: ``progress(done, total)``, called as perturbed inputs are scored.
Progress = Callable[[int, int], None]
#: ``masks(image, start, stop) -> (stop - start, H, W)`` masks in [0, 1], for one image.
MaskSource = Callable[[int, int, int], Array]
#: ``make(image, start, stop) -> (stop - start, K, h, w)`` replacements of the layer's output.
ActivationSource = Callable[[int, int, int], Array]


class Forwards(Protocol):
    """Extra forward passes of the explained model, on the inputs of one call.

    Scores are those of each image's target units: ``(count, T)`` per image. They are softmax
    probabilities of those units when ``probabilities`` is true, else the raw outputs.
    """

    n_images: int
    targets_per_image: int
    input_size: Size
    probabilities: bool

    def plan(self, total: int) -> None:
        """Announce how many perturbed inputs the method will score (for progress reports)."""
        ...

    def masked(self, masks: MaskSource, counts: Sequence[int]) -> list[np.ndarray]:
        """Return, per image ``n``, the scores of ``inputs[n] * mask``, one row per mask."""
        ...

    def ablated(self, activations: Array, channels: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return, per image, the scores with each listed channel of the layer set to zero.

        ``activations`` are the layer's rows ``(M, K, h, w)``; ``channels[n]`` lists the channels
        to ablate for image ``n``, and its result has one row per listed channel.
        """
        ...

    def replaced(self, make: ActivationSource, counts: Sequence[int]) -> list[np.ndarray]:
        """Return, per image ``n``, the scores with the layer's output replaced, one row each.

        ``make(n, start, stop)`` gives image ``n``'s replacements ``(stop - start, K, h, w)``.
        Only the network after the layer runs where the backend can isolate it.
        """
        ...

    def unperturbed(self) -> np.ndarray:
        """Return the ``(N, T)`` scores of the inputs themselves."""
        ...


class PerturbationMethod(Method):
    """Base class of methods that weigh channels by the scores of perturbed inputs.

    Args:
        batch_size: Perturbed inputs per forward pass; ``None`` picks one from a memory budget
            (see the backend's documentation).
        score_mode: What a perturbed input's score is: ``"probability"`` (softmax over the output
            units, as the Score-CAM paper does), ``"raw"`` (the output itself), or ``"auto"``:
            probabilities for class targets, raw outputs for :class:`camlens.Output` and
            function targets.
        progress: Called as ``progress(done, total)`` while perturbed inputs are scored.
    """

    needs_gradients: ClassVar[bool] = False
    default_score_mode: ClassVar[ScoreMode] = "auto"

    def __init__(
        self,
        *,
        batch_size: int | None = None,
        score_mode: ScoreMode | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Validate and keep the hyper-parameters."""
        batch_size = positive_int(batch_size, "batch_size", optional=True)
        chosen = self.default_score_mode if score_mode is None else score_mode
        if chosen not in ("auto", "probability", "raw"):
            raise BadInputError(
                f"score_mode must be 'auto', 'probability' or 'raw'; got {score_mode!r}"
            )
        self.batch_size = batch_size
        self.score_mode: ScoreMode = chosen
        self.progress = progress

    def cam(self, activations: Array, gradients: Array) -> Array:
        """Refuse: a perturbation method needs forward passes; see :meth:`cam_from_forwards`."""
        raise MethodError(f"{type(self).__name__} needs forward passes: use cam_from_forwards()")

    def cam_from_forwards(self, activations: Array, forwards: Forwards) -> Array:
        """Return the signed maps ``(M, h, w)``, scoring perturbed inputs through ``forwards``.

        By default ``sum_k w_k A^k`` with the weights of :meth:`channel_weights`; a method that
        is no weighted sum overrides this instead.
        """
        return weighted_sum(self.channel_weights(activations, forwards), activations)

    def channel_weights(self, activations: Array, forwards: Forwards) -> np.ndarray:
        """Return the ``(M, K)`` channel weights, scoring perturbed inputs through ``forwards``."""
        raise NotImplementedError(
            f"{type(self).__name__} must override channel_weights() or cam_from_forwards()"
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_size={self.batch_size}, score_mode={self.score_mode!r})"
        )


def channel_masks(activations: Array, channels: Array, size: Size) -> Array:
    """Return the listed channels of one ``(K, h, w)`` activation, upsampled and min-max scaled.

    The Score-CAM masks: ``s(Up(A^k))``, ``(len(channels), H, W)`` in ``[0, 1]``; a constant
    channel gives an all-zero mask.
    """
    xp = namespace(activations)
    picked = xp.take(activations, channels, axis=0)
    return normalise(resize(picked, size), signed=False)[0]


def constant_channels(activations: Array) -> np.ndarray:
    """Return a ``(K,)`` NumPy mask of the channels whose ``(h, w)`` map is constant."""
    xp = namespace(activations)
    flat = xp.reshape(activations, (activations.shape[0], -1))
    same = xp.max(flat, axis=1) == xp.min(flat, axis=1)
    return np.asarray(to_host(same), dtype=bool)


def weighted_terms(weights: np.ndarray | Array, activations: Array) -> Array:
    """Return ``w_k A^k`` for rows: ``weights (M, K)`` (NumPy, or the activations' own kind),
    ``activations (M, K, h, w)``."""
    xp = namespace(activations)
    w = xp.asarray(weights, dtype=activations.dtype, device=device(activations))
    return w[:, :, None, None] * activations


def weighted_sum(weights: np.ndarray | Array, activations: Array) -> Array:
    """Return ``sum_k w_k A^k`` for rows: ``weights (M, K)`` (NumPy, or the activations' own
    kind), ``activations (M, K, h, w)``."""
    xp = namespace(activations)
    return xp.sum(weighted_terms(weights, activations), axis=1)
