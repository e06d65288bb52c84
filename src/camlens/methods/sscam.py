"""SS-CAM: Smoothed Score-CAM."""

from __future__ import annotations

import numpy as np
from array_api_compat import device

from camlens._checks import positive_int
from camlens._types import Array
from camlens.backends._common import namespace
from camlens.backends.base import ScoreMode
from camlens.errors import BadInputError
from camlens.methods.perturbation import Progress
from camlens.methods.scorecam import ScoreCAM


class SSCAM(ScoreCAM):
    """SS-CAM (Wang, Naidu et al., 2020, arXiv:2006.14255): Score-CAM with smoothed masks.

    Each channel's Score-CAM mask gets Gaussian noise, ``n_samples`` times, and its weight is
    the mean score: ``w_k = 1/N sum_j f(X ∘ (M_k + eps_j))``, ``eps_j ~ N(0, std^2)`` (the
    paper's first variant, noise on the masks; its second adds the noise to the input).
    Noise is drawn from ``seed`` per (channel, sample), the same for every image, so results
    are reproducible and depend neither on the batch size nor on the other images of a batch.
    Cost: ``n_samples`` times Score-CAM's.

    Args:
        n_samples: Noisy copies per channel (the paper uses 35).
        std: Standard deviation of the noise added to masks in ``[0, 1]``.
        seed: Seed of the noise.
        top_n, batch_size, score_mode, progress: See :class:`ScoreCAM`.
    """

    name = "sscam"

    def __init__(
        self,
        *,
        n_samples: int = 35,
        std: float = 0.2,
        seed: int = 0,
        top_n: int | None = None,
        batch_size: int | None = None,
        score_mode: ScoreMode | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Validate and keep the hyper-parameters."""
        super().__init__(
            top_n=top_n, batch_size=batch_size, score_mode=score_mode, progress=progress
        )
        n_samples = positive_int(n_samples, "n_samples")
        if not std >= 0:
            raise BadInputError(f"std must be >= 0; got {std!r}")
        self.n_samples, self.std, self.seed = n_samples, float(std), int(seed)

    @property
    def samples(self) -> int:
        """Return ``n_samples``."""
        return self.n_samples

    def perturb_mask(self, masks: Array, sample: int, seeds: np.ndarray) -> Array:
        """Return ``masks + noise``, the noise drawn from (seed, channel, sample)."""
        xp = namespace(masks)
        noise = np.stack(
            [
                np.random.default_rng([self.seed, int(s), sample]).normal(
                    0.0, self.std, masks.shape[1:]
                )
                for s in seeds
            ]
        )
        return masks + xp.asarray(noise, dtype=masks.dtype, device=device(masks))
