"""Score-CAM, and its Faster-Score-CAM option."""

from __future__ import annotations

import numpy as np
from array_api_compat import device

from camlens._checks import positive_int
from camlens._types import Array
from camlens.backends._common import namespace, to_host
from camlens.backends.base import ScoreMode
from camlens.errors import BadInputError
from camlens.methods.perturbation import (
    Forwards,
    PerturbationMethod,
    Progress,
    channel_masks,
    constant_channels,
)


class ScoreCAM(PerturbationMethod):
    """Score-CAM (Wang et al., CVPR Workshops 2020, arXiv:1910.01279).

    Each channel's map, upsampled and min-max scaled to ``[0, 1]``, masks the input:
    ``M_k = s(Up(A^k))``; its weight is the target's score on ``X ∘ M_k``, by default the
    softmax probability of the target class, as in the paper and its official code:
    ``w_k = softmax(f(X ∘ M_k))_c``, ``L = ReLU(sum_k w_k A^k)``.

    Deviations elsewhere: pytorch-grad-cam weighs by a softmax over the channels' raw logits
    instead (not offered; ``score_mode="raw"`` gives raw scores). No baseline score is subtracted,
    as in the official code (the paper's "increase of confidence" ``f(X ∘ M_k) - f(X_b)``
    differs by ``f(X_b) sum_k A^k``).

    Exact shortcut: a constant channel gives an all-zero mask, so all constant channels (dead
    ReLU channels are common) share one score, computed once per image.

    Args:
        top_n: Faster-Score-CAM: score only the ``top_n`` channels of largest activation
            variance; the others get weight 0. ``None`` scores every channel.
        batch_size, score_mode, progress: See :class:`PerturbationMethod`.
    """

    name = "scorecam"

    def __init__(
        self,
        *,
        top_n: int | None = None,
        batch_size: int | None = None,
        score_mode: ScoreMode | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Validate and keep the hyper-parameters."""
        super().__init__(batch_size=batch_size, score_mode=score_mode, progress=progress)
        self.top_n = positive_int(top_n, "top_n", optional=True)

    @property
    def samples(self) -> int:
        """Return how many perturbed masks each channel gets (1 for Score-CAM)."""
        return 1

    def perturb_mask(self, masks: Array, sample: int, seeds: np.ndarray) -> Array:
        """Return the masks ``(B, H, W)`` used for ``sample`` (Score-CAM: the masks themselves).

        ``seeds`` holds one integer per mask, its channel index, for methods that draw noise
        reproducibly (the same for every image, so a batch equals its images one by one).
        """
        return masks

    def channel_weights(self, activations: Array, forwards: Forwards) -> np.ndarray:
        """Return ``(M, K)`` weights ``w_k``: the target's score on the input masked by ``A^k``."""
        xp = namespace(activations)
        t = forwards.targets_per_image
        k = activations.shape[1]
        if self.top_n is not None and self.top_n > k:
            raise BadInputError(f"top_n={self.top_n} is larger than the layer's {k} channels")
        firsts = [activations[n * t] for n in range(forwards.n_images)]
        chosen = [self._channels(a) for a in firsts]
        constant = [constant_channels(a) for a in firsts]
        need_zero = self.top_n is None and any(c.any() for c in constant)
        forwards.plan(self.samples * sum(len(c) for c in chosen) + need_zero * len(firsts))
        size = forwards.input_size

        def zero_mask(n: int, start: int, stop: int) -> Array:
            return xp.zeros((stop - start, *size), dtype=firsts[n].dtype, device=device(firsts[n]))

        weights = np.zeros((forwards.n_images, t, k))
        if need_zero:  # every constant channel's mask is all zero: one score per image
            for n, s in enumerate(forwards.masked(zero_mask, [1] * len(firsts))):
                weights[n][:, constant[n]] = s[0][:, None]
        for sample in range(self.samples):

            def masks(n: int, start: int, stop: int, sample: int = sample) -> Array:
                picked = chosen[n][start:stop]
                base = channel_masks(firsts[n], xp.asarray(picked, device=device(firsts[n])), size)
                return self.perturb_mask(base, sample, picked)

            scores = forwards.masked(masks, [len(c) for c in chosen])
            for n, (c, s) in enumerate(zip(chosen, scores, strict=True)):
                weights[n][:, c] += s.T / self.samples
        return weights.reshape(-1, k)

    def _channels(self, a: Array) -> np.ndarray:
        """Return the channels to score: the non-constant ones, or the top-n by variance."""
        if self.top_n is None:
            return np.flatnonzero(~constant_channels(a))
        flat = to_host(a).reshape(a.shape[0], -1)
        order = np.argsort(-flat.var(axis=1), kind="stable")
        return np.sort(order[: self.top_n])
