"""The ONNX backend: ``.onnx`` graphs run by onnxruntime, CPU by default, CUDA when asked.

An ONNX graph gives no gradients here, so only the methods that need none run on it: the
Score-CAM family (masked inputs), Ablation-CAM and Recipro-CAM (the graph after the layer, on
ablated or replaced activations: see ``_tail.py``) and the methods that read activations only
(Eigen-CAM, FEM, KPCA-CAM); the metrics need forwards only. A layer is a tensor of the graph
(``_layers.py``); one probe is one run of a copy of the graph with the layers' tensors as extra
outputs. Activations leave this module as ``(N, K, h, w)`` NumPy arrays whatever the tensor's
layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from camlens._types import Array, Size
from camlens.backends._common import NoAttention, check_finite, check_host_batch, to_host
from camlens.backends.base import Copies, LayerInfo, LayerRef, OutputSelector, Probe, Scoring
from camlens.backends.onnx import _layers, _perturb
from camlens.backends.onnx._forward import run
from camlens.backends.onnx._graph import Layout, Shapes, copy_with_outputs, to_channels_first
from camlens.backends.onnx._model import OnnxModel
from camlens.backends.onnx._tail import Tail, make_tail, repeat_rows
from camlens.backends.onnx._targets import resolve
from camlens.errors import BadInputError, LayerError, MethodError, UnsupportedModelError
from camlens.targets import Target

__all__ = ["OnnxBackend", "OnnxModel"]

_DTYPES = {1: np.float32, 10: np.float16, 11: np.float64}


class OnnxBackend(NoAttention):
    """Explain an :class:`OnnxModel`. Inputs are NumPy arrays in the model's own layout."""

    framework = "onnx"
    gradients = False
    hessians = False

    def __init__(
        self, model: OnnxModel, *, output: OutputSelector = None, logits: bool = True
    ) -> None:
        """Wrap ``model``; ``output`` is an output's index or name; with ``logits`` a final
        softmax is read before it is applied."""
        self.model = model
        self.graph = model.graph()
        self.output = self.graph.output_name(output)
        before = self.graph.softmax_input(self.output)
        if before is not None and logits:
            self.explained, self.score_kind = before, "pre-softmax logit"
        else:
            self.explained = self.output
            self.score_kind = "softmax probability" if before is not None else "model output"
        self.channels_last = self.graph.layout == "NHWC"
        self._one_by_one = self.graph.fixed_batch == 1
        dtype = _DTYPES.get(self.graph.input_info.elem_type)
        if dtype is None:
            raise UnsupportedModelError(
                f"{model.name}'s input has ONNX element type {self.graph.input_info.elem_type}; "
                "camlens feeds float16, float32 or float64 images"
            )
        self._dtype = dtype

    def resolve_layer(self, layer: Any) -> LayerRef:
        """Return the tensor named by a tensor name or a one-output node's name."""
        return _layers.resolve_layer(self.graph, layer)

    def auto_layer(self, inputs: Any) -> LayerRef:
        """Return the last tensor that is a spatial feature map for these inputs."""
        return _layers.auto_layer(self.graph, self._shapes(inputs), self.explained)

    def summarize(self, input_size: Size | None, channels: int) -> list[LayerInfo]:
        """Describe every tensor from shape inference for one image (the model's own size
        where it fixes one, else ``input_size`` or 224 x 224)."""
        dims = self.graph.input_info.dims or ()
        given = input_size or (224, 224)
        if self.channels_last:
            h, w, c = dims[1], dims[2], dims[3]
        else:
            c, h, w = dims[1], dims[2], dims[3]
        size = (h if isinstance(h, int) else given[0], w if isinstance(w, int) else given[1])
        if input_size is not None and size != tuple(input_size):
            raise BadInputError(
                f"{self.model.name} takes images of {size[0]}x{size[1]}, not "
                f"{input_size[0]}x{input_size[1]}"
            )
        ch = c if isinstance(c, int) else channels
        image = (*size, ch) if self.channels_last else (ch, *size)
        return _layers.summarize(self.graph, self.graph.shapes(image), self.explained)

    def copies(self) -> Copies:
        """Refuse: randomised copies of ONNX graphs are not made (the sanity check)."""
        raise UnsupportedModelError(
            "the sanity check re-initialises a model's layers, which camlens does not do for "
            "ONNX graphs; run it on the original PyTorch or Keras model"
        )

    def prepare(self, inputs: Any) -> np.ndarray:
        """Validate ``inputs`` and return them as a NumPy array of the model's input dtype."""
        layout = "(N, H, W, C)" if self.channels_last else "(N, C, H, W)"
        try:
            array = to_host(inputs)
        except Exception as exc:
            raise BadInputError(
                f"inputs must be a NumPy array (or a CPU tensor) of shape {layout}; got "
                f"{type(inputs).__name__} ({exc})"
            ) from exc
        check_host_batch(array, layout)
        shape = array.shape
        dims = self.graph.input_info.dims or ()
        if any(isinstance(d, int) and d != s for d, s in zip(dims[1:], shape[1:], strict=True)):
            expected = tuple(d if isinstance(d, int) else None for d in dims)
            raise BadInputError(
                f"inputs of shape {shape} do not fit {self.model.name}'s input {expected} "
                f"({self.graph.layout})"
            )
        fixed = self.graph.fixed_batch
        if fixed is not None and fixed != 1:
            raise UnsupportedModelError(
                f"{self.model.name} fixes its batch size to {fixed}; export it with a dynamic "
                "batch axis (torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))"
            )
        check_finite(array)
        return np.ascontiguousarray(array, dtype=self._dtype)

    def input_size(self, inputs: Any) -> Size:
        """Return ``(H, W)`` of the inputs."""
        s = inputs.shape
        return (int(s[1]), int(s[2])) if self.channels_last else (int(s[2]), int(s[3]))

    def _shapes(self, inputs: np.ndarray) -> Shapes:
        return self.graph.shapes(inputs.shape[1:])

    def _layout(self, name: str) -> Layout:
        return self.graph.layouts().get(name, self.graph.layout)

    def _session(self, names: Sequence[str], inputs: np.ndarray) -> Any:
        shapes = self._shapes(inputs)
        key = ("outputs", tuple(names), inputs.shape[1:])
        return self.model.session(key, lambda: copy_with_outputs(self.graph, names, shapes))

    def probe(
        self,
        inputs: Any,
        layers: Sequence[LayerRef],
        target: Target,
        *,
        gradients: bool,
        guided: bool = False,
        biases: bool = False,
        hessian: bool = False,
    ) -> Probe:
        """Run the model once with the layers' tensors as extra outputs (no gradients, no
        bias-gradients, no Hessian-vector products: ``gradients``, ``guided``, ``biases`` or
        ``hessian`` is refused)."""
        if hessian:
            raise MethodError(
                "ONNX models give no Hessian-vector products (nor gradients) here, so "
                "ShapleyCAM cannot run on them; explain the PyTorch or Keras model, or use a "
                "gradient-free method (scorecam, sscam, iscam, ablationcam, eigencam)"
            )
        if gradients or guided or biases:
            raise MethodError(
                "ONNX models give no gradients here; use a gradient-free method (scorecam, "
                "sscam, iscam, ablationcam, eigencam)"
            )
        names = [self.explained, *(ref.name for ref in layers)]
        out, *acts = run(
            self._session(names, inputs),
            {self.graph.input: inputs},
            names,
            one_by_one=self._one_by_one,
        )
        resolved = resolve(target, out)
        rows = []
        for ref, act in zip(layers, acts, strict=True):
            if act.ndim != 4:
                raise LayerError(
                    f"layer {ref.name!r} outputs shape {act.shape}, which has no spatial extent; "
                    "CAM needs a 4-D feature map, e.g. the last convolutional block's output"
                )
            first = to_channels_first(act, self._layout(ref.name))
            t = resolved.units.shape[1]
            rows.append(
                np.ascontiguousarray(
                    np.repeat(first, t, axis=0) if t > 1 else first,
                    dtype=np.float32 if first.dtype != np.float64 else np.float64,
                )
            )
        return Probe(
            activations=rows,
            gradients=None,
            resolved=resolved,
            outputs=out.astype(np.float32).reshape(out.shape[0], -1),
        )

    def to_numpy(self, array: Array) -> np.ndarray:
        """Copy a result array to NumPy."""
        return to_host(array)

    def _forward(self, inputs: np.ndarray) -> Any:
        return self._session([self.explained], inputs)

    def masked_scores(
        self,
        inputs: Any,
        masks: Callable[[int, int, int], Array],
        counts: Sequence[int],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score masked inputs in batches of at most ``batch_size``."""
        session = self._forward(inputs)

        def evaluate(n: int, start: int, stop: int) -> np.ndarray:
            batch = _perturb.masked(inputs[n : n + 1], masks(n, start, stop), self.channels_last)
            return self._run(session, {self.graph.input: batch})

        return scoring.collect(counts, evaluate)

    def _run(self, session: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return run(session, feeds, [self.explained], one_by_one=self._one_by_one)[0]

    def perturbed_scores(
        self,
        make: Callable[[int, int, int], Array],
        counts: Sequence[int],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score the channels-first ``(B, C, H, W)`` inputs ``make(n, start, stop)`` builds."""
        sessions: dict[tuple[int, ...], Any] = {}

        def evaluate(n: int, start: int, stop: int) -> np.ndarray:
            batch = np.asarray(to_host(make(n, start, stop)), dtype=self._dtype)
            if self.channels_last:
                batch = batch.transpose(0, 2, 3, 1)
            batch = np.ascontiguousarray(batch)
            if batch.shape[1:] not in sessions:
                sessions[batch.shape[1:]] = self._forward(batch)
            return self._run(sessions[batch.shape[1:]], {self.graph.input: batch})

        return scoring.collect(counts, evaluate)

    def ablated_scores(
        self,
        inputs: Any,
        layer: LayerRef,
        activations: Sequence[Array],
        channels: Sequence[np.ndarray],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score channel ablations, running only the graph after the layer."""
        channels_last = self._layout(layer.name) == "NHWC"
        dtype = self._tensor_dtype(inputs, layer.name)
        acts = [np.asarray(to_host(a), dtype=dtype) for a in activations]

        def make(n: int, start: int, stop: int) -> np.ndarray:
            return _perturb.ablated(acts[n], channels[n][start:stop], channels_last)

        return self._tail_scores(inputs, layer, make, [len(c) for c in channels], scoring)

    def replaced_scores(
        self,
        inputs: Any,
        layer: LayerRef,
        make: Callable[[int, int, int], Array],
        counts: Sequence[int],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score replaced layer outputs, running only the graph after the layer."""
        channels_last = self._layout(layer.name) == "NHWC"
        dtype = self._tensor_dtype(inputs, layer.name)

        def replacements(n: int, start: int, stop: int) -> np.ndarray:
            batch = np.asarray(to_host(make(n, start, stop)), dtype=dtype)
            if channels_last:
                batch = batch.transpose(0, 2, 3, 1)
            return np.ascontiguousarray(batch)

        return self._tail_scores(inputs, layer, replacements, counts, scoring)

    def _tensor_dtype(self, inputs: np.ndarray, name: str) -> Any:
        shapes = self._shapes(inputs)
        return _DTYPES.get(shapes[name].elem_type, np.float32) if name in shapes else np.float32

    def _tail_scores(
        self,
        inputs: np.ndarray,
        layer: LayerRef,
        make: Callable[[int, int, int], np.ndarray],
        counts: Sequence[int],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score ``make(n, start, stop)`` fed as the layer's tensor into the graph after it."""
        shapes = self._shapes(inputs)
        key = ("tail", layer.name, self.explained, inputs.shape[1:])
        tails = self.model._cache
        if key not in tails:
            tails[key] = make_tail(self.graph, layer.name, self.explained, shapes)
        tail: Tail = tails[key]
        session = self.model.session((*key, "graph"), lambda: tail.graph)
        upstream = (
            None
            if tail.upstream is None
            else self.model.session((*key, "upstream"), lambda: tail.upstream)  # type: ignore[arg-type,return-value]
        )
        inner = [name for name in tail.boundary if name != self.graph.input]
        values: dict[int, dict[str, np.ndarray]] = {}

        def evaluate(n: int, start: int, stop: int) -> np.ndarray:
            image = inputs[n : n + 1]
            if n not in values:
                values.clear()
                found = {self.graph.input: image}
                if upstream is not None:
                    outs = run(upstream, {self.graph.input: image}, inner, one_by_one=False)
                    found.update(zip(inner, outs, strict=True))
                values[n] = found
            batch = make(n, start, stop)
            feeds = {layer.name: batch}
            for name in tail.boundary:
                feeds[name] = repeat_rows(values[n][name], len(batch))
            return self._run(session, feeds)

        return scoring.collect(counts, evaluate)
