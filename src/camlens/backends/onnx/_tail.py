"""Running only the part of an ONNX graph after one tensor, for many replacement values.

Ablation-CAM scores a layer's activations with each channel zeroed. :func:`make_tail` cuts the
graph at the layer's tensor into a *tail* graph: the nodes the explained output needs that
depend on the tensor, with the tensor as the tail's first input. What else the tail reads from
before the layer is found walking back from it:

- a tensor with one row per image (its first axis is the symbolic batch axis; the image input
  is one) is a *boundary* input: computed once per image by the full graph (batch 1) and
  repeated to the batch of replacements;
- anything else (constants, shapes, values computed from shapes) is recomputed in the tail
  from its own inputs, at the tail's batch, so a ``Shape`` of the input sees the tail's batch.

When the tail reads nothing but the layer (the usual case: a pooled head), a call costs only the
head on B rows. The user's graph is copied, never modified.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from camlens.backends.onnx._graph import BATCH, Graph, Shapes, copy_with_outputs, node_inputs

__all__ = ["Tail", "make_tail"]


@dataclass(frozen=True, eq=False)
class Tail:
    """A graph cut after a layer's tensor.

    Attributes:
        layer: The layer's tensor name, the tail's first input.
        boundary: The per-image tensors from before the layer the tail also reads, in order
            (the image input among them where the tail reads it).
        graph: The tail graph: inputs ``(layer, *boundary)``, output the explained tensor.
        upstream: The full graph with the boundary tensors (other than the image) as outputs,
            or None when the tail reads only the layer and the image.
    """

    layer: str
    boundary: tuple[str, ...]
    graph: onnx.ModelProto
    upstream: onnx.ModelProto | None


def make_tail(graph: Graph, layer: str, output: str, shapes: Shapes) -> Tail:
    """Cut ``graph`` after ``layer``; the tail computes ``output`` from it.

    Args:
        graph: The model's graph.
        layer: The tensor to replace.
        output: The explained tensor (a graph output, or the input of a final softmax).
        shapes: Shape inference for the inputs being explained (batch axis symbolic).
    """
    downstream = {layer}
    for node in graph.nodes:
        if any(name in downstream for name in node_inputs(node)):
            downstream.update(out for out in node.output if out)
    fixed = graph.fixed_batch is not None  # rows run one at a time: every value is per image

    def batched(name: str) -> bool:
        info = shapes.get(name)
        if name == graph.input or fixed:
            return True
        return info is not None and bool(info.dims) and info.dims[0] == BATCH  # type: ignore[index]

    included: set[int] = set()
    boundary: list[str] = []
    used_initializers: set[str] = set()
    seen: set[str] = set()
    stack = [output]
    while stack:
        name = stack.pop()
        if name in seen or name == layer:
            continue
        seen.add(name)
        if name in graph.initializers:
            used_initializers.add(name)
            continue
        index = graph.producer.get(name)
        if name not in downstream and (index is None or batched(name)):
            boundary.append(name)
            continue
        if index is None:
            continue
        included.add(index)
        stack.extend(node_inputs(graph.nodes[index]))

    boundary.sort(key=lambda n: -1 if n == graph.input else graph.producer.get(n, -1))
    proto = graph.proto
    tail_graph = helper.make_graph(
        nodes=[graph.nodes[i] for i in sorted(included)],
        name=f"{proto.graph.name or 'model'}_tail",
        inputs=[_batched_info(graph, name, shapes) for name in (layer, *boundary)],
        outputs=[_batched_info(graph, output, shapes)],
        initializer=[t for t in proto.graph.initializer if t.name in used_initializers],
        sparse_initializer=[
            t for t in proto.graph.sparse_initializer if t.name in used_initializers
        ],
    )
    tail = helper.make_model(
        tail_graph,
        opset_imports=list(proto.opset_import),
        ir_version=proto.ir_version,
        functions=list(proto.functions),
    )
    inner = [name for name in boundary if name != graph.input]
    upstream = copy_with_outputs(graph, inner, shapes) if inner else None
    return Tail(layer, tuple(boundary), tail, upstream)


def _batched_info(graph: Graph, name: str, shapes: Shapes) -> onnx.ValueInfoProto:
    """A value info for ``name`` whose batch axis is free (the tail runs on B rows)."""
    info = graph.value_info(name, shapes)
    tensor = info.type.tensor_type
    if tensor.HasField("shape") and tensor.shape.dim and graph.fixed_batch is None:
        tensor.shape.dim[0].Clear()
        tensor.shape.dim[0].dim_param = BATCH
    return info


def repeat_rows(value: np.ndarray, count: int) -> np.ndarray:
    """Return ``value`` (one row) repeated to ``count`` rows."""
    return np.repeat(value, count, axis=0)
