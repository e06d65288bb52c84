"""Reading an ONNX graph: its image input, explained output, tensors, shapes and layouts.

Shapes come from ONNX shape inference on a copy of the model whose input is fixed to the
inputs' own size, with the batch axis left symbolic (:data:`BATCH`): a tensor whose first axis
is that symbol holds one row per image. Layouts are followed from the input through the graph:
convolutions and pools give channels-first tensors whatever the model takes, a transpose by
``(0, 2, 3, 1)`` or ``(0, 3, 1, 2)`` switches, other operators keep their first input's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper, shape_inference

from camlens.backends.base import OutputSelector
from camlens.errors import UnsupportedModelError

__all__ = ["BATCH", "Graph", "Layout", "Shapes", "TensorInfo", "copy_with_outputs"]

#: The symbolic batch axis camlens gives the input for shape inference.
BATCH = "camlens_batch"

Layout = Literal["NCHW", "NHWC"]

#: Operators whose 4-D output is channels-first by definition.
_CHANNELS_FIRST = frozenset(
    {
        "AveragePool",
        "BatchNormalization",
        "Conv",
        "ConvInteger",
        "ConvTranspose",
        "DepthToSpace",
        "GlobalAveragePool",
        "GlobalLpPool",
        "GlobalMaxPool",
        "InstanceNormalization",
        "LpPool",
        "LRN",
        "MaxPool",
        "QLinearConv",
        "SpaceToDepth",
    }
)
_FLOATS = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.BFLOAT16,
    }
)


@dataclass(frozen=True)
class TensorInfo:
    """What shape inference says of one tensor: element type and dims (ints, symbols, None)."""

    elem_type: int
    dims: tuple[int | str | None, ...] | None

    @property
    def is_float(self) -> bool:
        """Whether the tensor holds floating-point values."""
        return self.elem_type in _FLOATS


#: Every tensor's :class:`TensorInfo` for one input shape, by name.
Shapes = dict[str, TensorInfo]


def _dims(value: onnx.ValueInfoProto) -> TensorInfo | None:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return None
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return TensorInfo(tensor.elem_type, None)
    dims: list[int | str | None] = []
    for dim in tensor.shape.dim:
        which = dim.WhichOneof("value")
        dims.append(
            int(dim.dim_value) if which == "dim_value" else dim.dim_param if which else None
        )
    return TensorInfo(tensor.elem_type, tuple(dims))


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Return every tensor ``node`` reads: its inputs and what its subgraphs read from outside."""
    names = [name for name in node.input if name]
    for attribute in node.attribute:
        graphs = list(attribute.graphs)
        if attribute.HasField("g"):
            graphs.append(attribute.g)
        for graph in graphs:
            inner = {i.name for i in graph.input} | {i.name for i in graph.initializer}
            for sub in graph.node:
                inner.update(sub.output)
            for sub in graph.node:
                names.extend(name for name in node_inputs(sub) if name not in inner)
    return names


class Graph:
    """The parts of a model's graph camlens reads, found once per model."""

    def __init__(self, proto: onnx.ModelProto, name: str, layout: Layout | None) -> None:
        """Read the image input and the graph's structure; refuse graphs camlens cannot run."""
        self.proto = proto
        self.name = name
        graph = proto.graph
        self.initializers = {t.name for t in graph.initializer} | {
            t.name for t in graph.sparse_initializer
        }
        inputs = [i for i in graph.input if i.name not in self.initializers]
        if len(inputs) != 1:
            raise UnsupportedModelError(
                f"{name} takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                "camlens explains models with one image input"
            )
        self.input = inputs[0].name
        info = _dims(inputs[0])
        if info is None or info.dims is None or len(info.dims) != 4 or not info.is_float:
            raise UnsupportedModelError(
                f"{name}'s input {self.input!r} is not a 4-D float image tensor ("
                f"{'unknown' if info is None else info.dims}); camlens explains image models "
                "taking (N, C, H, W) or (N, H, W, C) floats"
            )
        self.input_info = info
        self.layout: Layout = layout or _guess_layout(info.dims)
        self.outputs: list[str] = [str(o.name) for o in graph.output]
        self.nodes = list(graph.node)
        self.producer: dict[str, int] = {}
        for index, node in enumerate(self.nodes):
            for out in node.output:
                if out:
                    self.producer[out] = index
        self._shapes: dict[tuple[int, ...], Shapes] = {}

    @property
    def fixed_batch(self) -> int | None:
        """Return the batch size the input fixes, or None where it is dynamic."""
        first = self.input_info.dims[0] if self.input_info.dims else None
        return first if isinstance(first, int) and first > 0 else None

    def output_name(self, selector: OutputSelector) -> str:
        """Return the graph output ``output=`` names: None (the only one), an index or a name."""
        if selector is None:
            if len(self.outputs) == 1:
                return self.outputs[0]
            raise UnsupportedModelError(
                f"{self.name} has {len(self.outputs)} outputs ({', '.join(self.outputs)}); pass "
                "output= with the index or name of the output to explain"
            )
        if isinstance(selector, bool) or not isinstance(selector, (int, str)):
            raise UnsupportedModelError(
                f"output= for an ONNX model is an output's index or name; got {selector!r}"
            )
        if isinstance(selector, int):
            if not -len(self.outputs) <= selector < len(self.outputs):
                raise UnsupportedModelError(
                    f"output={selector} is out of range: {self.name} has outputs "
                    f"{', '.join(self.outputs)}"
                )
            return self.outputs[selector]
        if selector not in self.outputs:
            raise UnsupportedModelError(
                f"output={selector!r} is not an output of {self.name}; its outputs: "
                f"{', '.join(self.outputs)}"
            )
        return selector

    def softmax_input(self, tensor: str) -> str | None:
        """Return the input of the softmax that produces ``tensor`` over its last axis, if any."""
        index = self.producer.get(tensor)
        if index is None or self.nodes[index].op_type != "Softmax":
            return None
        node = self.nodes[index]
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), -1)
        return node.input[0] if axis in (-1, 1) else None

    def shapes(self, image: Sequence[int]) -> Shapes:
        """Return every tensor's type and dims for images of shape ``image`` (no batch axis)."""
        key = tuple(int(d) for d in image)
        if key not in self._shapes:
            self._shapes[key] = self._infer(key)
        return self._shapes[key]

    def _infer(self, image: tuple[int, ...]) -> Shapes:
        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        dims = model.graph.input[[i.name for i in model.graph.input].index(self.input)]
        shape = dims.type.tensor_type.shape
        first = self.fixed_batch
        for axis, value in enumerate(shape.dim):
            if axis == 0:
                if first is None:
                    value.Clear()
                    value.dim_param = BATCH
            else:
                value.Clear()
                value.dim_value = image[axis - 1]
        try:
            inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception as exc:  # onnx raises InferenceError or a checker error
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UnsupportedModelError(
                f"ONNX shape inference fails on {self.name} for inputs of shape "
                f"{(None, *image)} ({type(exc).__name__}: {first_line[:300]}); do the inputs "
                "have the size the model takes?"
            ) from exc
        graph = inferred.graph
        found: Shapes = {}
        for value in [*graph.input, *graph.value_info, *graph.output]:
            info = _dims(value)
            if info is not None:
                found[value.name] = info
        return found

    def tensors(self) -> Iterator[tuple[str, onnx.NodeProto]]:
        """Yield ``(tensor name, node producing it)`` in graph order."""
        for node in self.nodes:
            for out in node.output:
                if out:
                    yield out, node

    def layouts(self) -> dict[str, Layout]:
        """Return the layout of each tensor, followed from the input through the graph."""
        found: dict[str, Layout] = {self.input: self.layout}
        for node in self.nodes:
            layout: Layout
            if node.op_type in _CHANNELS_FIRST:
                layout = "NCHW"
            else:
                first = next((found[n] for n in node.input if n in found), self.layout)
                layout = first
                if node.op_type == "Transpose":
                    perm = next(
                        (
                            list(helper.get_attribute_value(a))
                            for a in node.attribute
                            if a.name == "perm"
                        ),
                        None,
                    )
                    if perm == [0, 2, 3, 1]:
                        layout = "NHWC"
                    elif perm == [0, 3, 1, 2]:
                        layout = "NCHW"
            for out in node.output:
                if out:
                    found[out] = layout
        return found

    def ancestors(self, tensor: str) -> set[str]:
        """Return every tensor ``tensor`` is computed from, and itself."""
        seen = {tensor}
        stack = [tensor]
        while stack:
            index = self.producer.get(stack.pop())
            if index is None:
                continue
            for name in node_inputs(self.nodes[index]):
                if name not in seen:
                    seen.add(name)
                    stack.append(name)
        return seen

    def value_info(self, name: str, shapes: Shapes) -> onnx.ValueInfoProto:
        """Return a value info for ``name`` with its inferred type (float if unknown)."""
        info = shapes.get(name)
        elem = info.elem_type if info is not None and info.elem_type else onnx.TensorProto.FLOAT
        dims = None
        if info is not None and info.dims is not None:
            dims = [d if d is not None else None for d in info.dims]
        return helper.make_tensor_value_info(name, elem, dims)


def copy_with_outputs(graph: Graph, names: Sequence[str], shapes: Shapes) -> onnx.ModelProto:
    """Return a copy of the model whose graph outputs are ``names`` (existing or inner tensors)."""
    model = onnx.ModelProto()
    model.CopyFrom(graph.proto)
    existing = {o.name: o for o in graph.proto.graph.output}
    outputs = [existing[n] if n in existing else graph.value_info(n, shapes) for n in names]
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    return model


def spatial(info: TensorInfo | None, layout: Layout) -> tuple[int, int] | None:
    """Return ``(h, w)`` of a 4-D tensor whose spatial dims are known, else None."""
    if info is None or info.dims is None or len(info.dims) != 4:
        return None
    h, w = (info.dims[2], info.dims[3]) if layout == "NCHW" else (info.dims[1], info.dims[2])
    return (h, w) if isinstance(h, int) and isinstance(w, int) else None


def to_channels_first(array: np.ndarray, layout: Layout) -> np.ndarray:
    """Return a 4-D array as ``(N, K, h, w)``."""
    return array if layout == "NCHW" else array.transpose(0, 3, 1, 2)


def _guess_layout(dims: tuple[Any, ...]) -> Layout:
    """Channels-first unless only the last axis looks like 1, 3 or 4 channels."""

    def small(d: Any) -> bool:
        return isinstance(d, int) and d in (1, 3, 4)

    return "NHWC" if small(dims[3]) and not small(dims[1]) else "NCHW"
