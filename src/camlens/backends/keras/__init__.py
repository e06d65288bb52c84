"""The Keras 3 backend: functional, Sequential, subclassed and nested models, on TensorFlow,
JAX or PyTorch (whichever Keras is running on; camlens reads it and never sets it).

Layout follows Keras's own backends: one small gradient module per framework
(``tensorflow.py``, ``jax.py``, ``torch.py``) with the same ``compile_probe`` function, and
shared graph code. Activations arrive channels-last and leave this module as ``(N, K, h, w)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import keras
import numpy as np
from keras import ops

from camlens._types import Array, Size
from camlens.backends._output import select_output
from camlens.backends.base import LayerRef, OutputSelector, Probe, Scoring
from camlens.backends.keras import _layers, _targets
from camlens.backends.keras._forward import Forward, is_tensor, softmax_replacements
from camlens.backends.keras._graph import graph_of
from camlens.backends.keras._tail import make_tail
from camlens.errors import BadInputError, UnsupportedModelError
from camlens.targets import Target, UnitTarget

__all__ = ["KerasBackend"]


def _identity(index: int, activation: Any) -> Any:
    return activation


class KerasBackend:
    """Explain a ``keras.Model``. Inputs are the model's own batch (channels-last by default)."""

    def __init__(self, model: Any, *, output: OutputSelector = None, logits: bool = True) -> None:
        """Wrap a built model; with ``logits`` a final softmax is read before it is applied."""
        if not model.built:
            raise UnsupportedModelError(
                f"model {model.name!r} is not built; call it once on a batch, or build it with "
                "an Input, before explaining it"
            )
        self.model = model
        self.output = output
        name = keras.backend.backend()
        self.framework = f"keras-{name}"
        self._impl: ModuleType = importlib.import_module(f"camlens.backends.keras.{name}")
        replacements, self.score = softmax_replacements(model)
        self._replacements = replacements if logits else {}
        if not logits and self.score == "pre-softmax logit":
            self.score = "softmax probability"
        self._channels_last = keras.config.image_data_format() == "channels_last"
        self.channels_last = self._channels_last
        self._compiled: dict[tuple[Any, ...], Any] = {}
        self._forward: Any = None
        self._tails: dict[int, Any] = {}
        self._units_by_shape: dict[tuple[int, ...], int] = {}

    def resolve_layer(self, layer: Any) -> LayerRef:
        """Return the layer given by a bare name, an ``outer/inner`` path or a layer object."""
        return _layers.resolve_layer(self.model, layer)

    def auto_layer(self, inputs: Any) -> LayerRef:
        """Return the last layer whose output is a spatial feature map."""
        return _layers.auto_layer(self.model, inputs)

    def prepare(self, inputs: Any) -> Any:
        """Validate ``inputs`` and return them as a tensor of the model's dtype."""
        try:
            array = np.asarray(ops.convert_to_numpy(inputs))
        except Exception as exc:
            raise BadInputError(
                f"inputs must be an array or tensor of shape (N, H, W, C); got "
                f"{type(inputs).__name__} ({exc})"
            ) from exc
        shape = array.shape
        if not np.issubdtype(array.dtype, np.floating):
            raise BadInputError(
                f"inputs have dtype {array.dtype}; camlens does not guess preprocessing: convert "
                "them to float and normalise them as the model expects"
            )
        expected = self._input_shape()
        if array.ndim == 3 and (expected is None or len(expected) == 4):
            raise BadInputError(
                f"inputs of shape {shape} have no batch axis; for one image pass inputs[None]"
            )
        if array.ndim != 4:
            raise BadInputError(f"inputs must be 4-D (N, H, W, C); got shape {shape}")
        if shape[0] == 0:
            raise BadInputError("the batch is empty (N = 0); pass at least one image")
        if expected is not None and any(
            e is not None and e != s for e, s in zip(expected[1:], shape[1:], strict=False)
        ):
            raise BadInputError(
                f"inputs of shape {shape} do not fit the model's input {tuple(expected)}"
            )
        if not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).sum())
            raise BadInputError(f"inputs contain {bad} NaN or infinite value(s); clean them first")
        dtype = self.model.inputs[0].dtype if graph_of(self.model) is not None else "float32"
        return ops.convert_to_tensor(array, dtype=dtype)

    def _input_shape(self) -> tuple[Any, ...] | None:
        graph = graph_of(self.model)
        if graph is None or len(graph.inputs) != 1:
            return None
        return tuple(graph.inputs[0].shape)

    def input_size(self, inputs: Any) -> Size:
        """Return ``(H, W)`` of the inputs."""
        shape = tuple(inputs.shape)
        return (
            (int(shape[1]), int(shape[2]))
            if self._channels_last
            else (
                int(shape[2]),
                int(shape[3]),
            )
        )

    def _n_units(self, inputs: Any) -> int:
        """Return the number of output units, from the graph or (once per shape) one image."""
        graph = graph_of(self.model)
        if graph is not None and len(graph.outputs) == 1 and self.output is None:
            shape = graph.outputs[0].shape[1:]
            if all(d is not None for d in shape):
                return int(np.prod(shape))
        key = tuple(inputs.shape[1:])
        if key not in self._units_by_shape:
            out = Forward(self.model, [], self._replacements, self.output)(inputs[:1], _identity)
            self._units_by_shape[key] = int(np.prod(out.shape[1:]))
        return self._units_by_shape[key]

    def probe(
        self, inputs: Any, layers: Sequence[LayerRef], target: Target, *, gradients: bool
    ) -> Probe:
        """Run the compiled probe for these inputs, layers and target."""
        n = int(inputs.shape[0])
        n_units = self._n_units(inputs) if isinstance(target, UnitTarget) else 0
        units, signs = _targets.plan(target, n, n_units)
        key = (
            tuple(inputs.shape),
            str(inputs.dtype),
            tuple(id(ref.handle) for ref in layers),
            _targets.trace_key(target),
            units.shape,
            gradients,
        )
        compiled = self._compiled.get(key)
        if compiled is None:
            forward = Forward(self.model, list(layers), self._replacements, self.output)
            picker = _targets.Picker(target)
            compiled = self._impl.compile_probe(forward, picker, gradients=gradients)
            self._compiled[key] = compiled
        acts, picked, used, flat, grads = compiled(inputs, ops.convert_to_tensor(units), signs)
        t = int(picked.shape[1])
        resolved = _targets.record(target, picked, used, signs)
        to_array = self._impl.for_maths
        rows = [self._channels_first(to_array(a), t) for a in acts]
        grad_rows = None if grads is None else [self._channels_first(to_array(g), 1) for g in grads]
        outputs = np.asarray(ops.convert_to_numpy(flat), dtype=np.float32)
        return Probe(activations=rows, gradients=grad_rows, resolved=resolved, outputs=outputs)

    def _channels_first(self, a: Array, repeat: int) -> Array:
        from array_api_compat import array_namespace

        xp = array_namespace(a)
        if self._channels_last:
            a = xp.permute_dims(a, (0, 3, 1, 2))
        if repeat > 1:
            a = xp.repeat(a, repeat, axis=0)
        return a if a.dtype in (xp.float32, xp.float64) else xp.astype(a, xp.float32)

    def to_numpy(self, array: Array) -> np.ndarray:
        """Copy a result array to NumPy."""
        return np.asarray(ops.convert_to_numpy(array))

    def _score(
        self,
        inputs: Any,
        counts: Sequence[int],
        scoring: Scoring,
        evaluate: Callable[[Any, int, int, int], Any],
    ) -> list[np.ndarray]:
        """Score ``evaluate(image, n, start, stop)`` batch by batch; ``(counts[n], T)`` per image.

        ``evaluate`` may return more rows than ``stop - start`` (padding); they are dropped.
        """
        results = []
        for n, count in enumerate(counts):
            x = None if inputs is None else inputs[n : n + 1]
            rows = []
            for start, stop in scoring.batches(count):
                out = select_output(evaluate(x, n, start, stop), self.output, is_tensor)
                flat = np.asarray(ops.convert_to_numpy(out), dtype=np.float64)
                flat = flat.reshape(flat.shape[0], -1)[: stop - start]
                if scoring.probabilities:
                    flat = np.exp(flat - flat.max(axis=1, keepdims=True))
                    flat /= flat.sum(axis=1, keepdims=True)
                rows.append(flat[:, scoring.units[n]])
                scoring.on_batch(stop - start)
            results.append(np.concatenate(rows) if rows else np.zeros((0, scoring.units.shape[1])))
        return results

    def masked_scores(
        self,
        inputs: Any,
        masks: Callable[[int, int, int], Array],
        counts: Sequence[int],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score masked inputs with a compiled forward, in batches of at most ``batch_size``.

        Batches are padded to a power of two, so the compiled forward sees few shapes.
        """
        forward = self._compiled_forward()

        def evaluate(x: Any, n: int, start: int, stop: int) -> Any:
            m = ops.convert_to_tensor(masks(n, start, stop), dtype=x.dtype)
            padded = min(scoring.batch_size, 1 << (stop - start - 1).bit_length())
            if padded > stop - start:
                m = ops.pad(m, [(0, padded - (stop - start)), (0, 0), (0, 0)])
            return forward(x * (m[..., None] if self._channels_last else m[:, None]))

        return self._score(inputs, counts, scoring, evaluate)

    def _compiled_forward(self) -> Any:
        if self._forward is None:
            forward = Forward(self.model, [], self._replacements, self.output)
            self._forward = self._impl.compile_forward(forward)
        return self._forward

    def perturbed_scores(
        self,
        make: Callable[[int, int, int], Array],
        counts: Sequence[int],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score the channels-first ``(B, C, H, W)`` inputs ``make(n, start, stop)`` builds."""
        forward = self._compiled_forward()
        dtype = self.model.inputs[0].dtype if graph_of(self.model) is not None else "float32"

        def evaluate(x: Any, n: int, start: int, stop: int) -> Any:
            batch = np.asarray(ops.convert_to_numpy(make(n, start, stop)))
            if self._channels_last:
                batch = batch.transpose(0, 2, 3, 1)
            return forward(ops.convert_to_tensor(batch, dtype=dtype))

        return self._score(None, counts, scoring, evaluate)

    def ablated_scores(
        self,
        inputs: Any,
        layer: LayerRef,
        activations: Sequence[Array],
        channels: Sequence[np.ndarray],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score channel ablations, re-running only the layer's tail in functional graphs."""
        key = id(layer.handle)
        if key not in self._tails:
            self._tails[key] = make_tail(self.model, layer.handle, self._replacements)
        tail = self._tails[key]
        # Channels-last (N, h, w, K) as the layer gives them, or (N, K, h, w).
        acts = [np.asarray(ops.convert_to_numpy(a)) for a in activations]
        if self._channels_last:
            acts = [a.transpose(1, 2, 0) for a in acts]

        def evaluate(x: Any, n: int, start: int, stop: int) -> Any:
            chunk = channels[n][start:stop]
            batch = np.repeat(acts[n][None], len(chunk), axis=0)
            if self._channels_last:
                batch[np.arange(len(chunk)), :, :, chunk] = 0
            else:
                batch[np.arange(len(chunk)), chunk] = 0
            return tail(x, ops.convert_to_tensor(batch, dtype=x.dtype))

        return self._score(inputs, [len(c) for c in channels], scoring, evaluate)
