"""Recipro-CAM: gradient-free, one head-only forward pass per location of the layer."""

from __future__ import annotations

import numpy as np
from array_api_compat import device

from camlens._types import Array
from camlens.backends._common import namespace
from camlens.backends.base import ScoreMode
from camlens.methods.perturbation import Forwards, PerturbationMethod, Progress


def location_masks(h: int, w: int, start: int, stop: int, *, gaussian: bool) -> np.ndarray:
    """Return the ``(stop - start, h, w)`` spatial masks of locations ``start..stop`` (row-major).

    One-hot at the location, or its value spread to the 3x3 neighbourhood by the official
    code's Gaussian ``[1/16, 1/8, 1/16; 1/8, 1/4, 1/8; 1/16, 1/8, 1/16]`` (separable:
    ``[1/4, 1/2, 1/4]`` on each axis; cut at the edges).
    """
    index = np.arange(start, stop)
    rows, cols = index // w, index % w
    if not gaussian:
        masks = np.zeros((len(index), h, w))
        masks[np.arange(len(index)), rows, cols] = 1.0
        return masks

    def profile(centres: np.ndarray, size: int) -> np.ndarray:
        distance = np.abs(np.arange(size)[None, :] - centres[:, None])
        weights: np.ndarray = np.where(distance == 0, 0.5, np.where(distance == 1, 0.25, 0.0))
        return weights

    spread: np.ndarray = profile(rows, h)[:, :, None] * profile(cols, w)[:, None, :]
    return spread


class ReciproCAM(PerturbationMethod):
    """Recipro-CAM (Byun & Lee, arXiv:2209.14074; CVPR 2024 XAI4CV workshop).

    For each location ``(i, j)`` of the layer, the network after the layer runs on the
    activations kept at that location only, ``M^ij = A ⊙ 1_ij``, and the map's value there is
    the target's score: ``L_ij = softmax(f_tail(M^ij))_c`` (the target's probability, as the
    paper; raw outputs for :class:`camlens.Output` targets, or with ``score_mode="raw"``).
    With ``gaussian=True``, ``M^ij`` spreads the location's activation vector ``A_ij`` over its
    3x3 neighbourhood with the official code's Gaussian (``A_ij ⊙ G(a - i, b - j)`` at
    ``(a, b)``), its second variant.

    ``h * w`` forward passes of the tail per image, batched; no gradient. Only the network
    after the layer runs where the backend can isolate it (torch.fx-traceable PyTorch models,
    Keras functional graphs); otherwise full forwards with the layer's output replaced (same
    maps, slower).

    Args:
        gaussian: Spread each location over its 3x3 neighbourhood (the official code's
            ``is_gaussian``; its default is off).
        batch_size, score_mode, progress: See :class:`PerturbationMethod`.
    """

    name = "reciprocam"

    def __init__(
        self,
        *,
        gaussian: bool = False,
        batch_size: int | None = None,
        score_mode: ScoreMode | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Validate and keep the hyper-parameters."""
        super().__init__(batch_size=batch_size, score_mode=score_mode, progress=progress)
        self.gaussian = bool(gaussian)

    def cam_from_forwards(self, activations: Array, forwards: Forwards) -> Array:
        """Return ``L_ij``, the target's score with the layer kept at location ``(i, j)``."""
        xp = namespace(activations)
        t = forwards.targets_per_image
        m, k, h, w = activations.shape
        firsts = [activations[n * t] for n in range(forwards.n_images)]
        forwards.plan(forwards.n_images * h * w)

        def make(n: int, start: int, stop: int) -> Array:
            a = firsts[n]
            masks = location_masks(h, w, start, stop, gaussian=self.gaussian)
            mask = xp.asarray(masks, dtype=a.dtype, device=device(a))[:, None]  # (B, 1, h, w)
            if not self.gaussian:
                return a[None] * mask
            index = np.arange(start, stop)
            flat = xp.reshape(a, (k, h * w))
            vectors = xp.take(flat, xp.asarray(index, device=device(a)), axis=1)  # (K, B)
            return xp.permute_dims(vectors, (1, 0))[:, :, None, None] * mask

        scores = forwards.replaced(make, [h * w] * forwards.n_images)  # (h*w, T) per image
        maps = np.stack([s.T.reshape(t, h, w) for s in scores]).reshape(m, h, w)
        return xp.asarray(maps, dtype=activations.dtype, device=device(activations))

    def __repr__(self) -> str:
        return (
            f"ReciproCAM(gaussian={self.gaussian}, batch_size={self.batch_size}, "
            f"score_mode={self.score_mode!r})"
        )
