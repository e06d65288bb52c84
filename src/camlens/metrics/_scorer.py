"""Scoring perturbed copies of explained inputs: the one way metrics reach a model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from camlens._checks import positive_int
from camlens._forwards import auto_batch_size
from camlens._locks import model_lock
from camlens.backends import OutputSelector, Scoring, backend_for
from camlens.backends.base import Inputs, ScoreMode, reads_probabilities
from camlens.errors import BadInputError, BadTargetError
from camlens.explanation import Explanation
from camlens.methods.perturbation import Progress


class Scorer:
    """The explained units' scores on perturbed versions of the explained images.

    Each explanation row gets its own perturbations of its image. Scores are softmax
    probabilities of the explained class for class targets (``score_mode="auto"``), the raw output
    for :class:`camlens.Output` targets (a regressor's units, e.g. years), signed by the
    target's sign; ``score_mode`` forces either.
    """

    def __init__(
        self,
        model: Any,
        inputs: Any,
        explanation: Explanation,
        *,
        score_mode: ScoreMode = "auto",
        output: OutputSelector = None,
        logits: bool = True,
        batch_size: int | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Prepare the inputs and check they fit the explanation."""
        if score_mode not in ("auto", "probability", "raw"):
            raise BadInputError(
                f"score_mode must be 'auto', 'probability' or 'raw'; got {score_mode!r}"
            )
        batch_size = positive_int(batch_size, "batch_size", optional=True)
        if (explanation.units < 0).any():
            raise BadTargetError(
                "metrics score output units: explain a class, camlens.Output(i) or a top-k "
                "target, not a function of the output"
            )
        backend = backend_for(model, output=output, logits=logits)
        x = backend.prepare(inputs)
        if isinstance(x, Inputs):
            raise BadInputError(
                "the metrics score perturbed images with models of one input, and these "
                f"inputs are a {type(x.entries).__name__} of several: the explainers take "
                "them (input= picks the image), the metrics do not yet; pass the image alone "
                "to a model that takes it"
            )
        images = np.asarray(backend.to_numpy(x), dtype=np.float32)
        if backend.channels_last:
            images = images.transpose(0, 3, 1, 2)
        size = tuple(images.shape[-2:])
        if explanation.maps.shape[1:] != size or int(explanation.image_index.max()) >= len(images):
            raise BadInputError(
                f"the explanation's maps {explanation.maps.shape} (for "
                f"{int(explanation.image_index.max()) + 1} images) do not fit the inputs "
                f"{len(images)} x {size}; pass the inputs that were explained"
            )
        self._backend = backend
        self._lock = model_lock(model)
        self.images = images  # (N, C, H, W), never modified
        self.rows = explanation.image_index
        self.signs = explanation.signs
        self.regression = explanation.target_kind in ("Output", "Score")
        self.probabilities = reads_probabilities(score_mode, raw_target=self.regression)
        self._progress = progress
        self._done = 0
        self._total = 0
        self._scoring = Scoring(
            units=explanation.units[:, None].copy(),
            probabilities=self.probabilities,
            batch_size=batch_size or auto_batch_size(int(images[0].nbytes)),
            on_batch=self._report,
        )

    def _report(self, count: int) -> None:
        self._done += count
        if self._progress is not None:
            self._progress(self._done, self._total)

    def scores(
        self, make: Callable[[int, int, int], np.ndarray], counts: Sequence[int]
    ) -> list[np.ndarray]:
        """Return, per row ``m``, the signed scores of the inputs ``make(m, start, stop)``."""
        self._total += sum(counts)  # progress(done, total) counts every input to be scored
        with self._lock:  # calls on one model take turns across threads
            raw = self._backend.perturbed_scores(make, list(counts), self._scoring)
        return [r[:, 0] * self.signs[m] for m, r in enumerate(raw)]

    def image(self, row: int) -> np.ndarray:
        """Return row ``row``'s image, ``(C, H, W)``."""
        return np.asarray(self.images[int(self.rows[row])])
