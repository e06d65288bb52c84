"""Scoring perturbed inputs on ONNX: masked images, images built channels-first, and ablated
layer outputs run through the layer's tail. At most ``batch_size`` perturbed inputs exist at a
time; everything stays in NumPy on the host (onnxruntime's own device copies aside)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from camlens._types import Array
from camlens.backends._common import to_host
from camlens.backends.base import Scoring

__all__ = ["score"]

#: ``(n, start, stop) -> the explained output for that batch`` (rows first).
Evaluate = Callable[[int, int, int], np.ndarray]


def score(counts: Sequence[int], scoring: Scoring, evaluate: Evaluate) -> list[np.ndarray]:
    """Score ``evaluate(n, start, stop)`` batch by batch; ``(counts[n], T)`` per image."""
    results = []
    for n, count in enumerate(counts):
        rows = []
        for start, stop in scoring.batches(count):
            flat = np.asarray(evaluate(n, start, stop), dtype=np.float64)
            flat = flat.reshape(flat.shape[0], -1)
            if scoring.probabilities:
                flat = np.exp(flat - flat.max(axis=1, keepdims=True))
                flat /= flat.sum(axis=1, keepdims=True)
            rows.append(flat[:, scoring.units[n]])
            scoring.on_batch(stop - start)
        results.append(np.concatenate(rows) if rows else np.zeros((0, scoring.units.shape[1])))
    return results


def masked(inputs: np.ndarray, masks: Array, channels_last: bool) -> np.ndarray:
    """Return ``inputs`` (one image) times each ``(B, H, W)`` mask."""
    m = np.asarray(to_host(masks), dtype=inputs.dtype)
    return np.asarray(inputs * (m[..., None] if channels_last else m[:, None]))


def ablated(activation: np.ndarray, chunk: np.ndarray, channels_last: bool) -> np.ndarray:
    """Return copies of one image's ``(K, h, w)`` activation, channel ``chunk[i]`` zeroed in
    copy ``i``, in the tensor's own layout."""
    batch = np.repeat(activation[None], len(chunk), axis=0)
    batch[np.arange(len(chunk)), chunk] = 0
    return batch.transpose(0, 2, 3, 1) if channels_last else batch
