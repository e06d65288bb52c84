"""ONNX cases of ``bench/run.py``: camlens on the ONNX export of a PyTorch case's network.

The network is the torch case's (same constructor, seed, input and layer), exported with
``torch.onnx.export(..., dynamo=False)`` and a dynamic batch axis into a temporary file, loaded
with ``camlens.io.load_model`` and run by onnxruntime on the CPU. The forward reference is a
plain onnxruntime session of the exported file with the same thread count, so ``x forward`` is
relative to the ONNX forward; the torch case of the same method, network and batch is the one
to set it against (``run.py`` compares the maps with it and reports the time ratio).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

import camlens
from _harness import Built
from _torch_cases import build_model
from camlens.io import load_model

#: onnxruntime intra-op threads (``set_threads``; None: onnxruntime's default).
_THREADS: list[int | None] = [None]

CAMLENS = {
    "scorecam": camlens.ScoreCAM,
    "ablationcam": camlens.AblationCAM,
    "eigencam": camlens.EigenCAM,
}


def _export(model: torch.nn.Module, x: torch.Tensor, folder: Path) -> Path:
    path = folder / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x[:1],),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
        )
    return path


def make(library: str, method: str, network: str, batch: int) -> Built:
    """Build the exported network, the input and the case's call and its ONNX forward."""
    warnings.simplefilter("ignore")
    model, x, layer = build_model(network, batch)
    folder = Path(tempfile.mkdtemp(prefix="camlens-bench-onnx-"))
    path = _export(model, x, folder)
    options = ort.SessionOptions()
    if _THREADS[0] is not None:
        options.intra_op_num_threads = _THREADS[0]
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    images = x.numpy()

    def forward() -> Any:
        return session.run(None, {"x": images})

    if library == "reference":
        if method != "forward":
            raise ValueError(f"no ONNX reference {method!r}")
        return Built(call=forward, forward=forward, how="onnxruntime session.run", info={})
    loaded = load_model(path)
    onnx_model = camlens.backends.onnx.OnnxModel(
        loaded.model.proto, name="model.onnx", threads=_THREADS[0]
    )
    rows = camlens.layers(onnx_model, input_size=tuple(images.shape[-2:]))
    tensor = next(row.name for row in rows if row.auto)
    if not tensor.startswith(f"/{layer}/"):
        raise RuntimeError(f"the automatic ONNX layer {tensor!r} is not the output of {layer!r}")
    explainer = CAMLENS[method](onnx_model, layer=tensor)
    how = f"camlens.{CAMLENS[method].__name__}(load_model('model.onnx').model, layer={tensor!r})(x)"
    info = {"layer": tensor, "onnx_threads": _THREADS[0]}

    def call() -> np.ndarray:
        return np.asarray(explainer(images).maps)

    return Built(call=call, forward=forward, how=how, info=info)


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in every onnxruntime session (0: its default)."""
    _THREADS[0] = threads if threads > 0 else None
    if threads > 0:
        torch.set_num_threads(threads)


def versions() -> dict[str, str]:
    """Return the versions of torch (the exporter), onnx and onnxruntime."""
    import onnx

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__}
