"""Binding a perturbation method's extra forward passes to one call's backend and inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from camlens._types import Array, Size
from camlens.backends import Backend, LayerRef, Scoring
from camlens.methods.perturbation import (
    ActivationSource,
    MaskSource,
    PerturbationMethod,
    Progress,
)

#: Memory one forward pass of perturbed inputs may take: 512 MiB, the model's activations
#: estimated at 32 times the inputs' size (measured peaks: 22-26x for MobileNetV2, 15x for a
#: ResNet-18, in inference mode on CPU; smaller batches were also faster there).
MEMORY_BUDGET = 512 * 2**20
ACTIVATION_FACTOR = 32
MAX_AUTO_BATCH = 256
#: A pass that keeps its graph for a backward pass holds every layer's output until then: its
#: inputs count this many times over in :func:`auto_batch_size` (noisy copies, SmoothGrad).
GRADIENT_FACTOR = 4


def auto_batch_size(item_bytes: int) -> int:
    """Return how many perturbed inputs of ``item_bytes`` each fit the memory budget."""
    return int(max(1, min(MAX_AUTO_BATCH, MEMORY_BUDGET // (ACTIVATION_FACTOR * item_bytes))))


class BoundForwards:
    """The :class:`camlens.methods.perturbation.Forwards` of one explanation call."""

    def __init__(
        self,
        backend: Backend,
        inputs: Any,
        layer: LayerRef,
        units: np.ndarray,
        method: PerturbationMethod,
        *,
        probabilities: bool,
        input_size: Size,
        item_bytes: int,
    ) -> None:
        """Bind the backend, the prepared inputs, the layer and the ``(N, T)`` target units."""
        self._backend = backend
        self._inputs = inputs
        self._layer = layer
        self.n_images, self.targets_per_image = units.shape
        self.input_size = input_size
        self.probabilities = probabilities
        self._scoring = Scoring(
            units=units,
            probabilities=probabilities,
            batch_size=method.batch_size or auto_batch_size(item_bytes),
            on_batch=self._report,
        )
        self._progress: Progress | None = method.progress
        self._done = 0
        self._total = 0

    def plan(self, total: int) -> None:
        """Announce how many perturbed inputs will be scored."""
        self._total += int(total)
        self._report(0)

    def _report(self, count: int) -> None:
        self._done += count
        if self._progress is not None:
            self._progress(self._done, max(self._total, self._done))

    def masked(self, masks: MaskSource, counts: Sequence[int]) -> list[np.ndarray]:
        """Return, per image, the scores of ``inputs[n] * mask`` for each of its masks."""
        return self._backend.masked_scores(self._inputs, masks, list(counts), self._scoring)

    def ablated(self, activations: Array, channels: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return, per image, the scores with each listed channel of the layer set to zero."""
        t = self.targets_per_image
        firsts = [activations[n * t] for n in range(self.n_images)]
        return self._backend.ablated_scores(
            self._inputs, self._layer, firsts, list(channels), self._scoring
        )

    def replaced(self, make: ActivationSource, counts: Sequence[int]) -> list[np.ndarray]:
        """Return, per image, the scores with the layer's output replaced by ``make``'s."""
        return self._backend.replaced_scores(
            self._inputs, self._layer, make, list(counts), self._scoring
        )

    def unperturbed(self) -> np.ndarray:
        """Return the ``(N, T)`` scores of the inputs themselves (an all-ones mask)."""
        size = self.input_size

        def ones(n: int, start: int, stop: int) -> np.ndarray:
            return np.ones((stop - start, *size), dtype=np.float32)

        return np.stack([s[0] for s in self.masked(ones, [1] * self.n_images)])
