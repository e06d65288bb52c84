"""Scoring many perturbed inputs with a torch model: masked inputs and ablated channels.

Everything runs under ``torch.inference_mode`` in eval mode, on the model's device, one batch
of at most ``batch_size`` perturbed inputs at a time; results reach the host once, at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from camlens._types import Array
from camlens.backends._common import select_output
from camlens.backends.base import Inputs, OutputSelector, Scoring, image_of, rows, with_image
from camlens.backends.torch._forward import call_model, expanded
from camlens.backends.torch._state import inference_state
from camlens.backends.torch._tail import Tail


def _unit_scores(out: torch.Tensor, units: torch.Tensor, probabilities: bool) -> torch.Tensor:
    flat = out.reshape(out.shape[0], -1)
    if probabilities:
        flat = torch.softmax(flat.float(), dim=1)
    return flat[:, units]


def _score(
    model: torch.nn.Module,
    output: OutputSelector,
    counts: Sequence[int],
    scoring: Scoring,
    evaluate: Callable[[int, int, int], Any],
) -> list[np.ndarray]:
    """Score ``evaluate(n, start, stop)`` batch by batch; ``(counts[n], T)`` per image."""
    results: list[torch.Tensor] = []
    with inference_state(model), torch.inference_mode():
        for n, count in enumerate(counts):
            parts = []
            for start, stop in scoring.batches(count):
                out = select_output(evaluate(n, start, stop), output, torch.is_tensor)
                index = torch.as_tensor(scoring.units[n], device=out.device)
                parts.append(_unit_scores(out, index, scoring.probabilities))
                scoring.on_batch(stop - start)
            empty = torch.zeros((0, scoring.units.shape[1]), dtype=torch.float64)
            results.append(torch.cat(parts) if parts else empty)
    return [r.double().cpu().numpy() for r in results]


def masked_scores(
    model: torch.nn.Module,
    output: OutputSelector,
    inputs: torch.Tensor | Inputs,
    masks: Callable[[int, int, int], Array],
    counts: Sequence[int],
    scoring: Scoring,
) -> list[np.ndarray]:
    """Return, per image, the target units' scores on ``inputs[n] * mask`` for each mask.

    Of several inputs only the explained image is masked; the others' row ``n`` is repeated
    beside each masked image (a view, not a copy).
    """

    def evaluate(n: int, start: int, stop: int) -> Any:
        row = rows(inputs, n, n + 1)
        x = image_of(row)
        m = torch.as_tensor(masks(n, start, stop), device=x.device, dtype=x.dtype)
        return call_model(model, with_image(expanded(row, len(m)), x * m[:, None]))

    return _score(model, output, counts, scoring, evaluate)


def ablated_scores(
    model: torch.nn.Module,
    output: OutputSelector,
    tail: Tail,
    inputs: torch.Tensor | Inputs,
    activations: Sequence[Any],
    channels: Sequence[np.ndarray],
    scoring: Scoring,
    to_layer: Callable[[torch.Tensor], torch.Tensor],
) -> list[np.ndarray]:
    """Return, per image, the target units' scores with each listed channel zeroed.

    ``activations[n]`` is on the grid, ``(K, h, w)``; ``to_layer`` puts a batch of them back
    in the layer's own layout before the tail runs.
    """

    def evaluate(n: int, start: int, stop: int) -> Any:
        row = rows(inputs, n, n + 1)
        x = image_of(row)
        act = torch.as_tensor(activations[n], device=x.device).to(x.dtype)
        chunk = torch.as_tensor(channels[n][start:stop], device=x.device)
        batch = act.expand(len(chunk), *act.shape).clone()
        batch[torch.arange(len(chunk), device=x.device), chunk] = 0
        return tail(row, to_layer(batch))

    return _score(model, output, [len(c) for c in channels], scoring, evaluate)


def replaced_scores(
    model: torch.nn.Module,
    output: OutputSelector,
    tail: Tail,
    inputs: torch.Tensor | Inputs,
    make: Callable[[int, int, int], Array],
    counts: Sequence[int],
    scoring: Scoring,
    to_layer: Callable[[torch.Tensor], torch.Tensor],
) -> list[np.ndarray]:
    """Return, per image, the target units' scores with the layer's output replaced by
    ``make(n, start, stop)``, a ``(B, K, h, w)`` grid that ``to_layer`` puts back in the
    layer's own layout."""

    def evaluate(n: int, start: int, stop: int) -> Any:
        row = rows(inputs, n, n + 1)
        x = image_of(row)
        batch = torch.as_tensor(make(n, start, stop), device=x.device).to(x.dtype)
        return tail(row, to_layer(batch))

    return _score(model, output, counts, scoring, evaluate)


def perturbed_scores(
    model: torch.nn.Module,
    output: OutputSelector,
    placement: tuple[torch.device, torch.dtype],
    make: Callable[[int, int, int], Array],
    counts: Sequence[int],
    scoring: Scoring,
) -> list[np.ndarray]:
    """Return, per image, the target units' scores on the inputs ``make(n, start, stop)``."""
    dev, dtype = placement

    def evaluate(n: int, start: int, stop: int) -> Any:
        return call_model(model, torch.as_tensor(make(n, start, stop), device=dev, dtype=dtype))

    return _score(model, output, counts, scoring, evaluate)
