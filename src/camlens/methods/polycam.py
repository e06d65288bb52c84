"""Poly-CAM: Score-CAM-style maps at several layers, fused from the deepest to the finest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from array_api_compat import device

from camlens._types import Array
from camlens.backends._common import namespace
from camlens.backends.base import ScoreMode
from camlens.errors import BadInputError
from camlens.methods.perturbation import Forwards, PerturbationMethod, Progress, channel_masks
from camlens.postprocess import rectify, resize

#: The paper's three weightings: insertion (PCAM+), deletion (PCAM-), both (PCAM±).
PolyVariant = Literal["plus", "minus", "plusminus"]
VARIANTS: tuple[str, ...] = ("plus", "minus", "plusminus")
#: The floor of the local normalisation's divisor.
LNORM_FLOOR = 1e-12


class PolyCAM(PerturbationMethod):
    """Poly-CAM (Englebert et al., ICPR 2022, arXiv:2204.13359): a high-resolution multi-layer map.

    At each layer ``l`` (give several, e.g. ``layer=["layer1", "layer2", "layer3",
    "layer4"]``), each channel's min-max scaled upsampled map ``M_k = s(Up(A^k))`` masks the
    input and weighs the channel by the score ``p`` (softmax probability of the target class
    by default, as in the paper):

    - ``variant="plus"`` (PCAM+, insertion): ``w_k = p(X ∘ M_k)``;
    - ``"minus"`` (PCAM-, deletion): ``w_k = ReLU(p(X) - p(X ∘ (1 - M_k)))``;
    - ``"plusminus"`` (PCAM±): ``w_k = ReLU(p(X ∘ M_k) + p(X) - p(X ∘ (1 - M_k)))``.

    The layer map is ``L_l = ReLU(sum_k w_k A^k)``. The maps are fused from the coarsest layer
    to the finest: ``P = L_coarsest``, then for each finer layer
    ``P = ReLU(LNorm(L_l) ∘ Up(P))``, where the local normalisation divides ``L_l`` by its own
    values brought down to the coarser grid and back up (``LNorm(L) = L / max(Up(Down(L)),
    1e-12)``), so the fine layer adds detail inside the coarse map's regions without
    re-weighting them. Layers are ordered by resolution, whatever order they are given in.
    The fused map at the finest layer's resolution is the ``raw`` map; it is then upsampled and
    normalised as every method's map is.

    Deviations from the official code: masks are min-max scaled (the official code clips to the
    0.1 and 99.9 percentiles first) and the fused map is normalised after upsampling to the
    input (the official code normalises before), as for every camlens method. Cost: one forward
    pass per channel of every layer (two for ``"plusminus"``), plus one per image.

    Args:
        variant: ``"plus"``, ``"minus"`` or ``"plusminus"``.
        local_norm: Apply the local normalisation (the paper's LNorm; ``False`` for its
            ablation study).
        batch_size, score_mode, progress: See :class:`PerturbationMethod`.
    """

    name = "polycam"

    def __init__(
        self,
        *,
        variant: PolyVariant = "plus",
        local_norm: bool = True,
        batch_size: int | None = None,
        score_mode: ScoreMode | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Validate and keep the hyper-parameters."""
        super().__init__(batch_size=batch_size, score_mode=score_mode, progress=progress)
        if variant not in VARIANTS:
            raise BadInputError(
                f"variant must be one of {', '.join(map(repr, VARIANTS))}; got {variant!r}"
            )
        self.variant: PolyVariant = variant
        self.local_norm = bool(local_norm)

    def channel_weights(self, activations: Array, forwards: Forwards) -> np.ndarray:
        """Return the ``(M, K)`` weights of one layer, from the scores of masked inputs."""
        xp = namespace(activations)
        t = forwards.targets_per_image
        k = activations.shape[1]
        firsts = [activations[n * t] for n in range(forwards.n_images)]
        counts = [k] * len(firsts)
        insert = self.variant != "minus"
        delete = self.variant != "plus"
        forwards.plan((insert + delete) * k * len(firsts) + delete * len(firsts))
        size = forwards.input_size

        def masks(n: int, start: int, stop: int) -> Array:
            picked = xp.arange(start, stop, device=device(firsts[n]))
            return channel_masks(firsts[n], picked, size)

        def inverse(n: int, start: int, stop: int) -> Array:
            return 1.0 - masks(n, start, stop)

        weights = np.zeros((forwards.n_images, t, k))
        if insert:
            for n, s in enumerate(forwards.masked(masks, counts)):
                weights[n] += s.T
        if delete:
            base = forwards.unperturbed()
            for n, s in enumerate(forwards.masked(inverse, counts)):
                weights[n] += base[n][:, None] - s.T
            weights = np.maximum(weights, 0.0)
        return weights.reshape(-1, k)

    def fuse_layers(self, cams: Sequence[Array]) -> Array:
        """Return the fused ``(M, h, w)`` map at the finest layer's resolution."""
        xp = namespace(*cams)
        order = sorted(range(len(cams)), key=lambda i: cams[i].shape[-2] * cams[i].shape[-1])
        fused = rectify(cams[order[0]])
        for i in order[1:]:
            layer = rectify(cams[i])
            fine = tuple(layer.shape[-2:])
            if self.local_norm:
                local = resize(resize(layer, tuple(fused.shape[-2:])), fine)
                layer = layer / xp.clip(local, min=LNORM_FLOOR)
            fused = rectify(layer * resize(fused, fine))
        return fused

    def __repr__(self) -> str:
        return (
            f"PolyCAM(variant={self.variant!r}, local_norm={self.local_norm}, "
            f"batch_size={self.batch_size}, score_mode={self.score_mode!r})"
        )
