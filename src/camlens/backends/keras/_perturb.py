"""Scoring perturbed inputs on Keras: masked images, images built channels-first, ablated
layer outputs re-run through the layer's tail. Batches are scored with a compiled forward."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from keras import ops

from camlens._types import Array
from camlens.backends._common import select_output
from camlens.backends.base import (
    Inputs,
    OutputSelector,
    Scoring,
    image_of,
    model_inputs,
    rows,
    with_image,
)
from camlens.backends.keras._forward import is_tensor

__all__ = ["ablated_scores", "masked_scores", "perturbed_scores", "replaced_scores"]

#: ``(image or None, n, start, stop) -> the model's raw output for that batch``.
Evaluate = Callable[[Any, int, int, int], Any]


def _score(
    output: OutputSelector,
    inputs: Any,
    counts: Sequence[int],
    scoring: Scoring,
    evaluate: Evaluate,
) -> list[np.ndarray]:
    """Score ``evaluate(image, n, start, stop)`` batch by batch; ``(counts[n], T)`` per image.

    ``evaluate`` may return more rows than ``stop - start`` (padding); they are dropped.
    """

    def outputs(n: int, start: int, stop: int) -> np.ndarray:
        x = None if inputs is None else rows(inputs, n, n + 1)
        out = select_output(evaluate(x, n, start, stop), output, is_tensor)
        return np.asarray(ops.convert_to_numpy(out))

    return scoring.collect(counts, outputs)


def masked_scores(
    forward: Callable[[Any], Any],
    output: OutputSelector,
    channels_last: bool,
    inputs: Any,
    masks: Callable[[int, int, int], Array],
    counts: Sequence[int],
    scoring: Scoring,
) -> list[np.ndarray]:
    """Score masked inputs with the compiled ``forward``, at most ``batch_size`` at a time.

    Batches are padded to a power of two, so the compiled forward sees few shapes. Of several
    inputs only the explained image is masked; the others' row is repeated beside it.
    """

    def evaluate(row: Any, n: int, start: int, stop: int) -> Any:
        x = image_of(row)
        m = ops.convert_to_tensor(masks(n, start, stop), dtype=x.dtype)
        padded = min(scoring.batch_size, 1 << (stop - start - 1).bit_length())
        if padded > stop - start:
            m = ops.pad(m, [(0, padded - (stop - start)), (0, 0), (0, 0)])
        masked = x * (m[..., None] if channels_last else m[:, None])
        return forward(model_inputs(with_image(repeated(row, int(m.shape[0])), masked)))

    return _score(output, inputs, counts, scoring, evaluate)


def repeated(inputs: Any, count: int) -> Any:
    """Return one row of several inputs with the others than the image repeated ``count``
    times (the image broadcasts); one input as it is."""
    if isinstance(inputs, Inputs):
        return inputs.others(lambda v: ops.repeat(v, count, axis=0))
    return inputs


def perturbed_scores(
    forward: Callable[[Any], Any],
    output: OutputSelector,
    channels_last: bool,
    dtype: Any,
    make: Callable[[int, int, int], Array],
    counts: Sequence[int],
    scoring: Scoring,
) -> list[np.ndarray]:
    """Score the channels-first ``(B, C, H, W)`` inputs ``make(n, start, stop)`` builds."""

    def evaluate(x: Any, n: int, start: int, stop: int) -> Any:
        batch = np.asarray(ops.convert_to_numpy(make(n, start, stop)))
        if channels_last:
            batch = batch.transpose(0, 2, 3, 1)
        return forward(ops.convert_to_tensor(batch, dtype=dtype))

    return _score(output, None, counts, scoring, evaluate)


def ablated_scores(
    tail: Callable[[Any, Any], Any],
    output: OutputSelector,
    to_layer: Callable[[np.ndarray], np.ndarray],
    inputs: Any,
    activations: Sequence[Array],
    channels: Sequence[np.ndarray],
    scoring: Scoring,
) -> list[np.ndarray]:
    """Score each image with each listed channel of the layer zeroed, through ``tail``.

    ``activations[n]`` is on the grid, ``(K, h, w)``; ``to_layer`` puts a batch of them back
    in the layer's own layout (channels-last, tokens) for the tail.
    """
    acts = [np.asarray(ops.convert_to_numpy(a)) for a in activations]

    def evaluate(x: Any, n: int, start: int, stop: int) -> Any:
        chunk = channels[n][start:stop]
        batch = np.repeat(acts[n][None], len(chunk), axis=0)
        batch[np.arange(len(chunk)), chunk] = 0
        return tail(x, ops.convert_to_tensor(to_layer(batch), dtype=image_of(x).dtype))

    return _score(output, inputs, [len(c) for c in channels], scoring, evaluate)


def replaced_scores(
    tail: Callable[[Any, Any], Any],
    output: OutputSelector,
    to_layer: Callable[[np.ndarray], np.ndarray],
    inputs: Any,
    make: Callable[[int, int, int], Array],
    counts: Sequence[int],
    scoring: Scoring,
) -> list[np.ndarray]:
    """Score each image with the layer's output replaced by ``make(n, start, stop)``, a
    ``(B, K, h, w)`` grid that ``to_layer`` puts back in the layer's own layout."""

    def evaluate(x: Any, n: int, start: int, stop: int) -> Any:
        batch = np.asarray(ops.convert_to_numpy(make(n, start, stop)))
        return tail(x, ops.convert_to_tensor(to_layer(batch), dtype=image_of(x).dtype))

    return _score(output, inputs, counts, scoring, evaluate)
