"""Backends: everything framework-specific. Chosen from the model object, never from a setting.

A framework is only looked at if the user has already imported it: dispatch reads
``sys.modules`` and imports nothing new.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any, Literal

from camlens.backends._layout import LayoutSpec
from camlens.backends.base import (
    Backend,
    Copies,
    Inputs,
    InputSelector,
    LayerRef,
    OutputSelector,
    Probe,
    Scoring,
)
from camlens.errors import ModelLoadError, UnsupportedModelError

__all__ = [
    "Backend",
    "Copies",
    "InputSelector",
    "Inputs",
    "LayerRef",
    "LayoutSpec",
    "OutputSelector",
    "Probe",
    "Scoring",
    "backend_for",
    "file_loader",
]


def backend_for(
    model: Any,
    *,
    output: OutputSelector = None,
    logits: bool = True,
    layout: LayoutSpec | None = None,
    input: InputSelector = None,
) -> Backend:
    """Return the backend for ``model``.

    Keras is checked before torch, since Keras-on-torch layers are also torch modules.
    ``layout`` says how the explained layers' outputs lie on the image grid (default: each
    layer's is found from what it is and its shape); ``input`` which of several inputs (a
    tuple, list or dict) is the explained image (default: the only 4-D one).
    """
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, getattr(keras, "Model", ())):
        from camlens.backends.keras import KerasBackend

        return KerasBackend(model, output=output, logits=logits, layout=layout, input=input)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        if isinstance(model, torch.jit.ScriptModule):
            from camlens.backends.torch._load import TORCHSCRIPT_ADVICE

            raise UnsupportedModelError(
                f"this is a TorchScript {type(model).__name__}; {TORCHSCRIPT_ADVICE}"
            )
        from camlens.backends.torch import TorchBackend

        return TorchBackend(model, output=output, layout=layout, input=input)
    onnx_backend = sys.modules.get("camlens.backends.onnx")
    if onnx_backend is not None and isinstance(model, onnx_backend.OnnxModel):
        if layout is not None and layout != LayoutSpec():
            raise UnsupportedModelError(
                "an ONNX graph's layers are read in the layout the model declares (NCHW or "
                "NHWC, OnnxModel(layout=...)); layout=, grid= and reshape= apply to torch and "
                "Keras models: drop them for this model"
            )
        if input is not None:
            raise UnsupportedModelError(
                "camlens explains ONNX graphs with one image input; input= picks one of several "
                "inputs of a torch or Keras model: drop it for this model"
            )
        return onnx_backend.OnnxBackend(model, output=output, logits=logits)  # type: ignore[no-any-return]
    onnx = sys.modules.get("onnx")
    if onnx is not None and isinstance(model, onnx.ModelProto):
        raise UnsupportedModelError(
            "this is a bare onnx.ModelProto; load the file with camlens.io.load_model("
            "'model.onnx'), or wrap it: camlens.backends.onnx.OnnxModel(proto)"
        )
    raise UnsupportedModelError(
        f"camlens cannot explain a {type(model).__module__}.{type(model).__qualname__}: "
        "pass a torch.nn.Module, a keras.Model or an ONNX model (camlens.io.load_model('m.onnx'))"
    )


def file_loader(framework: Literal["torch", "keras", "onnx"], what: str) -> ModuleType:
    """Return the backend's ``_load`` module, which reads ``framework``'s model files.

    Importing it imports the framework; where that is not installed the error says how to
    install it (``what`` names the file or model being loaded).
    """
    try:
        return importlib.import_module(f"camlens.backends.{framework}._load")
    except ImportError as exc:
        needs = ("onnx", "onnxruntime") if framework == "onnx" else (framework,)
        if exc.name is None or exc.name.split(".")[0] not in needs:
            raise
        raise ModelLoadError(
            f"loading {what!r} needs {exc.name.split('.')[0]}, which is not installed: "
            f"pip install 'camlens[{framework}]'"
        ) from exc
