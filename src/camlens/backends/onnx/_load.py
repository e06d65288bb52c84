"""Loading ``.onnx`` files: the protobuf read and checked, nothing else run.

An ONNX file holds a graph and its weights, no code; camlens keeps the safe-by-default posture
of its other loaders all the same: graphs that need operators from outside the ONNX standard
and onnxruntime's own contrib set (``com.microsoft``), which would need a custom-op library, are
refused, and such libraries are never registered. Weights kept in external data files are read
from beside the model file, as ``onnx.load`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import onnx
from google.protobuf.message import DecodeError

from camlens.backends.onnx._model import OnnxModel
from camlens.errors import CamlensError, ModelLoadError

__all__ = ["load"]

#: Operator domains onnxruntime runs without a custom-op library.
_KNOWN_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"}
)


def load(path: Path, *, device: str | None = None) -> OnnxModel:
    """Read, check and wrap an ONNX file; one session is built, so a graph onnxruntime cannot
    run fails here and not in the middle of a run."""
    try:
        proto = onnx.load(str(path))
    except DecodeError as exc:
        raise ModelLoadError(
            f"{path.name!r} is not a valid ONNX file (its protobuf does not parse: {exc}); is it "
            "truncated or corrupt?"
        ) from exc
    except Exception as exc:  # onnx raises ValidationError, OSError for external data...
        raise ModelLoadError(
            f"onnx cannot read {path.name!r} ({type(exc).__name__}: {exc})"
        ) from exc
    if not proto.graph.node:
        raise ModelLoadError(
            f"{path.name!r} holds no ONNX graph (no nodes); is it truncated or not an ONNX model?"
        )
    domains = {opset.domain for opset in proto.opset_import} | {n.domain for n in proto.graph.node}
    custom = sorted(
        d for d in domains - _KNOWN_DOMAINS if d not in {f.domain for f in proto.functions}
    )
    if custom:
        raise ModelLoadError(
            f"{path.name!r} uses operators from {', '.join(repr(d) for d in custom)}, which "
            "need a custom-op library; camlens never loads such libraries. Export the model "
            "with standard ONNX operators"
        )
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and opset > newest:
        raise ModelLoadError(
            f"{path.name!r} is stamped with ONNX opset {opset}, newer than any this onnx knows "
            f"(at most {newest}); re-export it at an earlier opset (torch.onnx.export(..., "
            "opset_version=17)) or upgrade onnx and onnxruntime"
        )
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx.checker.ValidationError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelLoadError(
            f"{path.name!r} is not a valid ONNX model ({first[:400]}); re-export it, e.g. with "
            "torch.onnx.export(..., dynamo=False) or tf2onnx, at an opset onnxruntime supports"
        ) from exc
    try:
        model = OnnxModel(proto, device=device or "cpu", name=repr(path.name))
        model.graph()
        model.session(("check",), lambda: proto)
    except ModelLoadError:
        raise
    except CamlensError as exc:
        raise ModelLoadError(str(exc)) from exc
    return model


def layout(model: OnnxModel) -> Literal["NCHW", "NHWC"]:
    """Return the image layout the model takes."""
    return model.graph().layout


def input_dims(model: OnnxModel) -> tuple[int | None, ...]:
    """Return the input's dims, ``None`` where they are not fixed."""
    dims = model.graph().input_info.dims or ()
    return tuple(d if isinstance(d, int) else None for d in dims)
