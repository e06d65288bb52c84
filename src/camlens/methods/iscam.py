"""IS-CAM: Integrated Score-CAM."""

from __future__ import annotations

import numpy as np

from camlens._checks import positive_int
from camlens._types import Array
from camlens.backends.base import ScoreMode
from camlens.methods.perturbation import Progress
from camlens.methods.scorecam import ScoreCAM


class ISCAM(ScoreCAM):
    """IS-CAM (Naidu et al., 2020, arXiv:2010.03023): Score-CAM integrated along the mask.

    Each channel's weight averages the scores of the input masked by the Score-CAM mask scaled
    from ``1/N`` to ``1``: ``w_k = 1/N sum_{i=1..N} f(X ∘ (i/N) M_k)``, a Riemann sum of the
    path integral from the zero mask to ``M_k``. Cost: ``n_steps`` times Score-CAM's.

    Args:
        n_steps: Points on the path (the paper uses 10).
        top_n, batch_size, score_mode, progress: See :class:`ScoreCAM`.
    """

    name = "iscam"

    def __init__(
        self,
        *,
        n_steps: int = 10,
        top_n: int | None = None,
        batch_size: int | None = None,
        score_mode: ScoreMode | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Validate and keep the hyper-parameters."""
        super().__init__(
            top_n=top_n, batch_size=batch_size, score_mode=score_mode, progress=progress
        )
        self.n_steps = positive_int(n_steps, "n_steps")

    @property
    def samples(self) -> int:
        """Return ``n_steps``."""
        return self.n_steps

    def perturb_mask(self, masks: Array, sample: int, seeds: np.ndarray) -> Array:
        """Return ``(sample + 1) / n_steps * masks``."""
        return masks * ((sample + 1) / self.n_steps)
