"""An ONNX model as camlens holds it: the graph, where it runs, and its sessions.

``onnx.ModelProto`` objects can be neither hashed nor weakly referenced, and camlens keys its
per-model lock on the model object, so an ONNX model is passed to camlens wrapped in an
:class:`OnnxModel` (which :func:`camlens.io.load_model` returns for ``.onnx`` files). The
wrapper never modifies the graph it holds: every graph camlens runs (with a layer's tensor as an
extra output, or the part after a layer) is built on a copy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import onnx
import onnxruntime as ort

from camlens.backends.onnx._graph import Graph
from camlens.errors import ModelLoadError, UnsupportedModelError

__all__ = ["OnnxModel", "providers_for"]

_CUDA = "CUDAExecutionProvider"


def providers_for(device: str) -> list[Any]:
    """Return onnxruntime's execution providers for ``"cpu"``, ``"cuda"`` or ``"cuda:K"``.

    Raises:
        ModelLoadError: The device is not one of these, or CUDA was asked for and this
            onnxruntime has no CUDA provider.
    """
    text = device.strip().lower()
    if text == "cpu":
        return ["CPUExecutionProvider"]
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise ModelLoadError(
            f"device={device!r} is not a device onnxruntime runs on here; use 'cpu', 'cuda' or "
            "'cuda:K'"
        )
    if _CUDA not in ort.get_available_providers():
        raise ModelLoadError(
            f"device={device!r} needs onnxruntime's CUDA execution provider, which this "
            f"onnxruntime does not have (available: {', '.join(ort.get_available_providers())}); "
            "install onnxruntime-gpu instead of onnxruntime, or use device='cpu'"
        )
    return [(_CUDA, {"device_id": int(match[1] or 0)}), "CPUExecutionProvider"]


@dataclass(frozen=True, eq=False)
class OnnxModel:
    """An ONNX model to explain.

    Attributes:
        proto: The ``onnx.ModelProto``; camlens never modifies it.
        device: ``"cpu"`` (the default), ``"cuda"`` or ``"cuda:K"``: where onnxruntime runs it.
        layout: ``"NCHW"`` or ``"NHWC"``: the image layout the model takes; ``None`` reads it
            from the input's shape (channels first unless only the last axis looks like 1, 3
            or 4 channels).
        name: What the model is called in messages, e.g. its file name.
        threads: onnxruntime's intra-op threads per session; ``None`` keeps its default (one
            per physical core).

    Example:
        >>> model = OnnxModel(onnx.load("model.onnx"))          # doctest: +SKIP
        >>> camlens.explain(model, x, method="scorecam")         # doctest: +SKIP
    """

    proto: Any
    device: str = "cpu"
    layout: Literal["NCHW", "NHWC"] | None = None
    name: str = "ONNX model"
    threads: int | None = None
    _cache: dict[Any, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        """Check the fields (the graph itself is checked when the backend first reads it)."""
        if not isinstance(self.proto, onnx.ModelProto):
            raise UnsupportedModelError(
                f"OnnxModel holds an onnx.ModelProto (onnx.load('model.onnx')); got "
                f"{type(self.proto).__name__}"
            )
        if self.layout not in (None, "NCHW", "NHWC"):
            raise UnsupportedModelError(
                f"layout must be 'NCHW', 'NHWC' or None; got {self.layout!r}"
            )
        providers_for(self.device)
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise UnsupportedModelError(
                f"threads must be a positive int or None; got {self.threads!r}"
            )

    def graph(self) -> Graph:
        """Return the model's :class:`Graph`, read once (kept with the sessions)."""
        found = self._cache.get("graph")
        if found is None:
            found = self._cache["graph"] = Graph(self.proto, self.name, self.layout)
        return found  # type: ignore[no-any-return]

    def session(self, key: Any, build: Callable[[], onnx.ModelProto]) -> ort.InferenceSession:
        """Return the session for the graph ``build()`` makes, built once per ``key``.

        Sessions are what is expensive to make (onnxruntime optimises the graph); they hold no
        results. Custom-op libraries are never registered.
        """
        if key not in self._cache:
            options = ort.SessionOptions()
            options.log_severity_level = 3  # errors only: onnxruntime's warnings go to stderr
            if self.threads is not None:
                options.intra_op_num_threads = self.threads
            graph = build()
            try:
                self._cache[key] = ort.InferenceSession(
                    graph.SerializeToString(),
                    sess_options=options,
                    providers=providers_for(self.device),
                )
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
                # onnxruntime prefixes its message with a C++ source location and signature.
                text = re.sub(r"\S+\.(?:h|cc):\d+ .*?\)\s", "", str(exc).strip())
                first = text.splitlines()[0] if text else ""
                raise UnsupportedModelError(
                    f"onnxruntime cannot run {self.name} ({type(exc).__name__}: {first[:400]}); "
                    "check that its opset is one this onnxruntime supports (onnxruntime "
                    f"{ort.__version__}) and that it uses no custom operators"
                ) from exc
        return self._cache[key]
