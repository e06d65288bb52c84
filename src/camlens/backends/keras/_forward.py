"""The traced pieces every Keras backend shares: a forward pass with taps, and the scores."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
from keras import ops

from camlens.backends._output import select_output
from camlens.backends.base import LayerRef, OutputSelector
from camlens.backends.keras._graph import Replacement, run
from camlens.errors import LayerError
from camlens.targets import Score, Target, TopK

#: ``tap(i, activation) -> what the network receives instead``.
LayerTap = Callable[[int, Any], Any]


def is_tensor(x: Any) -> bool:
    """Return whether ``x`` is a tensor of the active Keras backend."""
    return bool(ops.is_tensor(x))


@dataclass(frozen=True, eq=False)
class Forward:
    """A forward pass of ``model`` that hands each target layer's output to a tap."""

    model: Any
    layers: Sequence[LayerRef]
    replacements: dict[int, Replacement]
    output: OutputSelector

    def __call__(self, inputs: Any, tap: LayerTap) -> Any:
        """Run the model on ``inputs``; return the tensor to explain."""
        taps = {id(ref.handle): _checked(ref, i, tap) for i, ref in enumerate(self.layers)}
        raw = run(self.model, inputs, taps, self.replacements)
        return select_output(raw, self.output, is_tensor)


def _checked(ref: LayerRef, index: int, tap: LayerTap) -> Callable[[Any], Any]:
    def check(out: Any) -> Any:
        if not is_tensor(out):
            raise LayerError(
                f"layer {ref.name!r} returns a {type(out).__name__}, not a feature map tensor"
            )
        if len(out.shape) != 4:
            raise LayerError(
                f"layer {ref.name!r} outputs shape {tuple(out.shape)}, which has no spatial "
                "extent; CAM needs a 4-D feature map, e.g. the last convolutional block"
            )
        return tap(index, out)

    return check


@dataclass(frozen=True, eq=False)
class Scores:
    """How a target's scores are read from the output inside a traced function."""

    target: Target

    def __call__(self, output: Any, units: Any, signs: Any) -> tuple[Any, Any, Any, Any]:
        """Return ``(scores, picked, units, flat)``: signed scores, raw values, units ``(N, T)``.

        ``flat`` is the model output, one row per image.

        ``units`` and ``signs`` are inputs for fixed targets; top-k ranks them here.
        """
        n = ops.shape(output)[0]
        if isinstance(self.target, Score):
            picked = self.target.fn(output)
            picked = ops.reshape(picked, (n, -1))
            return picked, picked, units, ops.reshape(output, (n, -1))
        flat = ops.reshape(output, (n, -1))
        if isinstance(self.target, TopK):
            units = ops.cast(ops.top_k(flat, self.target.k, sorted=True)[1], "int32")
        picked = ops.take_along_axis(flat, units, axis=1)
        return picked * ops.cast(signs, picked.dtype), picked, units, flat


def softmax_replacements(model: Any) -> tuple[dict[int, Replacement], str]:
    """Return how to read a classifier's pre-softmax scores, and what the score is.

    A final ``Softmax`` layer or ``Activation("softmax")`` is skipped; a final ``Dense`` with a
    softmax activation is computed without it (``x @ kernel + bias``, reading its weights). The
    user's model is not modified.
    """
    from camlens.backends.keras._graph import output_operation

    found = output_operation(model)
    if found is None:
        return {}, "model output"
    op, _ = found
    softmax = keras.activations.softmax
    if isinstance(op, keras.layers.Softmax) or (
        isinstance(op, keras.layers.Activation) and op.activation is softmax
    ):
        return {id(op): lambda op, args, kwargs: args[0]}, "pre-softmax logit"
    if isinstance(op, keras.layers.Dense) and op.activation is softmax:

        def dense_logits(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            z = ops.matmul(args[0], op.kernel)
            return z + op.bias if op.use_bias else z

        return {id(op): dense_logits}, "pre-softmax logit"
    is_probability = isinstance(op, keras.layers.Softmax) or getattr(op, "activation", None) is (
        softmax
    )
    return {}, "softmax probability" if is_probability else "model output"
