"""Loading a model to explain from a file or a bundled name.

The file's kind is read from its content where the content says (zip archives written by
``torch.save``, ``torch.jit.save``, ``torch.export.save`` and Keras; HDF5), from its extension
otherwise. The framework is imported only once a file needs it, by the backend that loads it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from camlens.backends import file_loader
from camlens.errors import CamlensError, ModelLoadError
from camlens.io._pickles import find_unsafe_pickle

__all__ = ["BUNDLED_MODELS", "LoadedModel", "load_model"]

#: Short names of the bundled demo models (see :mod:`camlens.zoo`).
BUNDLED_MODELS = ("mobilenet_v2", "mobilenet_v2_keras")

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_TORCH_EXTENSIONS = (".pt", ".pth", ".ts", ".pt2", ".bin", ".ckpt")
_SUPPORTED = (
    "Keras .keras / .h5 / .hdf5; ONNX .onnx; torch.export programs .pt2; PyTorch state dicts "
    ".pt / .pth / .safetensors with a factory; whole pickled PyTorch models with "
    "trust_pickle=True"
)
_TRUST = (
    "camlens loads it only with --trust-pickle (trust_pickle=True), for files from a source you "
    "trust"
)

# File kinds that define their own model, so a factory has no use.
_WHOLE_MODELS = {
    "keras": "Keras file",
    "hdf5": "Keras HDF5 file",
    "export": "torch.export program",
    "onnx": "ONNX model",
}


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready to explain, with what its file says about the inputs it takes.

    Attributes:
        model: The ``torch.nn.Module`` (in eval mode), ``keras.Model`` or
            ``camlens.backends.onnx.OnnxModel``.
        framework: ``"torch"``, ``"keras"`` or ``"onnx"``.
        source: What was loaded, for people: ``"torch.export program model.pt2"``.
        layout: ``"NCHW"`` or ``"NHWC"``: the image layout the model takes.
        input_size: ``(H, W)`` the model takes, or ``None`` where the file does not fix it.
        channels: Input channels, or ``None`` where the file does not fix them.
        classes: Class names by output index, where known (ImageNet for the bundled models).
    """

    model: Any
    framework: Literal["torch", "keras", "onnx"]
    source: str
    layout: Literal["NCHW", "NHWC"]
    input_size: tuple[int, int] | None = None
    channels: int | None = None
    classes: list[str] | None = None


def load_model(
    source: str | os.PathLike[str],
    *,
    factory: str | None = None,
    trust_pickle: bool = False,
    device: str | None = None,
    search_path: Sequence[str | os.PathLike[str]] = (),
) -> LoadedModel:
    """Load a model to explain from a file, or a bundled model by name.

    Nothing in a file runs code unless ``trust_pickle=True``: before any framework reads the
    file, every pickle in it (the file itself, each member of a zip archive, zips nested in
    members) is read without being executed, and a file whose pickles would import anything
    but tensors, their storages, dtypes and plain containers (what ``torch.load(...,
    weights_only=True)`` accepts) is refused with a :class:`ModelLoadError` that names the member
    and the import. Supported sources:

    - Keras 3 ``.keras``, ``.h5`` and ``.hdf5`` files, loaded with
      ``keras.saving.load_model(path, compile=False, safe_mode=True)``: Keras's safe mode is on,
      so a file that would run Python code on loading (a ``Lambda`` layer) or import modules it
      names (custom objects) is refused; ``trust_pickle=True`` loads it with
      ``safe_mode=False`` (Lambda layers; custom objects must still be importable).
    - ``torch.export`` programs (``.pt2``, saved with ``torch.export.save``), exported with a
      dynamic batch dimension. They are unflattened back into a module tree with the original
      submodule names, so ``layer="features.18"`` works as on the original model.
    - PyTorch state dicts (``.pt``, ``.pth``, also nested under ``"state_dict"``,
      ``"model_state_dict"`` or ``"model"`` in a checkpoint dict) and ``.safetensors`` files
      (needs the ``safetensors`` package), with ``factory``: the function that builds the
      model. Weights are read with ``torch.load(..., weights_only=True)`` and loaded strictly.
    - Whole PyTorch models saved with ``torch.save(model)``, only with ``trust_pickle=True``:
      unpickling them can run arbitrary code.
    - ONNX models (``.onnx``), run by onnxruntime (needs ``camlens[onnx]``), on ``device``
      ``"cpu"`` (the default) or ``"cuda"``/``"cuda:K"`` (needs onnxruntime-gpu). The graph is
      checked with ``onnx.checker``; graphs with operators outside the standard and
      onnxruntime's own need a custom-op library and are refused (camlens never loads one).
      Only gradient-free methods run on them (Score-CAM family, Ablation-CAM, Eigen-CAM), and
      the metrics.
    - ``"mobilenet_v2"`` and ``"mobilenet_v2_keras"``: the bundled ImageNet MobileNetV2 in
      PyTorch or Keras (:mod:`camlens.zoo`), with ImageNet class names.

    TorchScript files are recognised and refused: TorchScript modules do not accept the
    forward hooks camlens needs.

    Args:
        source: A file path or a bundled model's name.
        factory: ``"package.module:function"`` or ``"path/to/file.py:function"``: a function
            called with no arguments that returns the ``torch.nn.Module`` the state dict
            belongs to. Needed for state dicts and safetensors files only.
        trust_pickle: Let the file run code on loading (only for files you trust): unpickle
            whole PyTorch models and any pickled archive member, load Keras files with
            ``safe_mode=False``.
        device: Torch device to move a PyTorch model to (``"cpu"``, ``"cuda"``, ``"cuda:1"``),
            or where onnxruntime runs an ONNX model (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        search_path: Folders to look for a ``"package.module:function"`` factory in, after
            ``sys.path`` (the command line gives the current folder). They are on the path
            only while the factory's module is imported, behind every installed package, so a
            file there never shadows an installed module. A ``"file.py:function"`` factory is
            imported with its own folder on the path the same way.

    Returns:
        The model, in eval mode for PyTorch, with its framework, input layout and, where the
        source says, its input size, channels and class names.

    Raises:
        ModelLoadError: The file is missing, corrupt or of an unsupported kind, the factory
            cannot be used, the weights do not fit, or the framework is not installed.
    """
    text = os.fspath(source)
    if text in BUNDLED_MODELS and not Path(text).exists():
        return _bundled(text, device)
    path = Path(text).expanduser()
    if not path.exists():
        hint = f"; bundled models: {', '.join(BUNDLED_MODELS)}" if os.sep not in text else ""
        raise ModelLoadError(f"model file {text!r} not found{hint}")
    if path.is_dir():
        raise ModelLoadError(
            f"{text!r} is a folder; give a model file ({_SUPPORTED}). For a TensorFlow "
            "SavedModel folder, load it in Keras and save it as .keras"
        )
    kind = _kind(path)
    if not trust_pickle and kind not in (
        "torchscript",
        "aotinductor",
        "onnx",
    ):  # never read: refused
        _refuse_code(path, kind)
    if factory is not None and kind in _WHOLE_MODELS:
        raise ModelLoadError(
            f"factory {factory!r} is for state dicts (.pt/.pth/.safetensors); "
            f"{path.name!r} is a {_WHOLE_MODELS[kind]}, which holds its own model: drop the "
            "factory"
        )
    if kind in ("keras", "hdf5"):
        return _keras_file(path, kind, device, trust_pickle)
    if kind == "onnx":
        return _onnx_file(path, device)
    return _torch_file(path, kind, factory, trust_pickle, device, search_path)


def _kind(path: Path) -> str:
    """Return the file kind, from its content where possible, else from its extension."""
    suffix = path.suffix.lower()
    with path.open("rb") as f:
        head = f.read(8)
    if head == _HDF5_MAGIC:
        return "hdf5"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelLoadError(f"{path.name!r} is a damaged zip archive: {exc}") from exc
        parts = {part for name in names for part in name.split("/")[1:-1]}
        tops = {name.split("/", 1)[-1] for name in names}
        if "config.json" in names and "metadata.json" in names:
            return "keras"
        if "aotinductor" in parts:
            return "aotinductor"
        if "code" in parts or "constants.pkl" in tops:
            return "torchscript"
        if "archive_format" in tops or "models" in parts:
            return "export"
        if "data.pkl" in tops:
            return "torch-pickle"
    if suffix == ".onnx":  # a protobuf: no magic number to read
        return "onnx"
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in (".keras", ".h5", ".hdf5", ".pt2"):
        # The extension promises an archive or HDF5 the content check did not find.
        raise ModelLoadError(
            f"{path.name!r} is not a valid {suffix} file (its content is neither a zip archive "
            "nor HDF5); is it truncated or corrupt?"
        )
    if suffix in _TORCH_EXTENSIONS:
        if head[:1] == b"\x80":  # a pickle: a legacy (non-zip) torch.save file
            return "torch-pickle"
        raise ModelLoadError(
            f"cannot read {path.name!r} as a PyTorch file (neither a zip archive nor a "
            "pickle); is it truncated or corrupt?"
        )
    raise ModelLoadError(
        f"cannot tell what kind of model {path.name!r} holds (extension {suffix or 'none'!r}). "
        f"Supported: {_SUPPORTED}"
    )


def _refuse_code(path: Path, kind: str) -> None:
    """Refuse a file with a pickle that would import more than tensors and containers."""
    if kind == "safetensors":  # a JSON header and raw tensors: nothing to unpickle
        return
    found = find_unsafe_pickle(path)
    if found is None:
        return
    where = f"its member {found.member!r} is" if found.member else "it is"
    hint = ""
    if kind == "torch-pickle":
        hint = (
            ". Safer: save model.state_dict() and load it with a factory (--factory), or export "
            "it with torch.export.save"
        )
    if not found.checked:
        raise ModelLoadError(
            f"{path.name!r} cannot be checked for code before loading: {where} {found.name}. "
            f"{_TRUST}"
        )
    raise ModelLoadError(
        f"{path.name!r} can run code when loaded: {where} a pickle that imports "
        f"{found.name!r}, and unpickling can run arbitrary code. {_TRUST}{hint}"
    )


def _no_device_for_keras(device: str | None, what: str) -> None:
    """Refuse ``device=`` for a Keras model, which runs where its backend places it."""
    if device is not None:
        raise ModelLoadError(
            f"device={device!r} moves PyTorch models only; {what} is a Keras model, which runs "
            "where its backend places it"
        )


def _keras_file(path: Path, kind: str, device: str | None, trust_code: bool) -> LoadedModel:
    _no_device_for_keras(device, repr(path.name))
    loader = file_loader("keras", path.name)
    model = loader.load(path, trust_code=trust_code)
    last = loader.channels_last()
    shape = loader.input_shape(model)
    size: tuple[int, int] | None = None
    channels: int | None = None
    if shape is not None and len(shape) == 4:
        h, w, c = (shape[1], shape[2], shape[3]) if last else (shape[2], shape[3], shape[1])
        size = (h, w) if h is not None and w is not None else None
        channels = c
    return LoadedModel(
        model=model,
        framework="keras",
        source=f"{_WHOLE_MODELS[kind]} {path.name}",
        layout="NHWC" if last else "NCHW",
        input_size=size,
        channels=channels,
    )


def _onnx_file(path: Path, device: str | None) -> LoadedModel:
    loader = file_loader("onnx", path.name)
    model = loader.load(path, device=device)
    layout = loader.layout(model)
    dims = loader.input_dims(model)
    h, w, c = (dims[1], dims[2], dims[3]) if layout == "NHWC" else (dims[2], dims[3], dims[1])
    return LoadedModel(
        model=model,
        framework="onnx",
        source=f"ONNX model {path.name}",
        layout=layout,
        input_size=(h, w) if h is not None and w is not None else None,
        channels=c,
    )


def _torch_file(
    path: Path,
    kind: str,
    factory: str | None,
    trust_pickle: bool,
    device: str | None,
    search_path: Sequence[str | os.PathLike[str]],
) -> LoadedModel:
    loader = file_loader("torch", path.name)
    size: tuple[int, int] | None = None
    channels: int | None = None
    if kind == "torchscript":
        raise ModelLoadError(f"{path.name!r} is a TorchScript archive; {loader.TORCHSCRIPT_ADVICE}")
    if kind == "aotinductor":
        raise ModelLoadError(
            f"{path.name!r} is an AOTInductor package, compiled code camlens cannot look inside; "
            "save the model with torch.export.save instead (a .pt2 program)"
        )
    build = _resolve_factory(factory, search_path) if factory is not None else None
    if kind == "export":
        model, shape = loader.export_program(path)
        channels = shape[1]
        size = (shape[2], shape[3]) if shape[2] is not None and shape[3] is not None else None
        source = f"{_WHOLE_MODELS[kind]} {path.name}"
    elif kind == "safetensors":
        model = loader.as_module(loader.safetensors_state(path), path, build, factory)
        source = f"safetensors file {path.name} + factory {factory}"
    else:
        obj = loader.pickled(path, trust_pickle=trust_pickle)
        model = loader.as_module(obj, path, build, factory)
        source = (
            f"state dict {path.name} + factory {factory}"
            if build is not None
            else f"pickled PyTorch model {path.name}"
        )
    return LoadedModel(
        model=loader.place(model, device),
        framework="torch",
        source=source,
        layout="NCHW",
        input_size=size,
        channels=channels,
    )


@contextmanager
def _behind_sys_path(folders: Sequence[str | os.PathLike[str]]) -> Iterator[None]:
    """Put ``folders`` at the end of ``sys.path`` for the block (never ahead of installed
    packages), then take off exactly what was added."""
    added = [os.fspath(f) for f in folders if os.fspath(f) not in sys.path]
    sys.path.extend(added)
    try:
        yield
    finally:
        for folder in added:
            if folder in sys.path:
                sys.path.remove(folder)


def _resolve_factory(
    spec: str, search_path: Sequence[str | os.PathLike[str]] = ()
) -> Callable[[], Any]:
    """Return the function ``"package.module:function"`` or ``"file.py:function"`` names."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ModelLoadError(
            f"factory {spec!r} is not of the form 'package.module:function' or "
            "'path/to/file.py:function'"
        )
    try:
        if module_name.endswith(".py"):
            file = Path(module_name).expanduser()
            if not file.is_file():
                raise ModelLoadError(f"factory file {module_name!r} not found (factory {spec!r})")
            module_spec = importlib.util.spec_from_file_location(file.stem, file)
            if module_spec is None or module_spec.loader is None:
                raise ModelLoadError(f"cannot import {module_name!r} (factory {spec!r})")
            module = importlib.util.module_from_spec(module_spec)
            with _behind_sys_path([file.resolve().parent]):
                module_spec.loader.exec_module(module)
        else:
            with _behind_sys_path(search_path):
                module = importlib.import_module(module_name)
    except CamlensError:
        raise
    except ImportError as exc:
        raise ModelLoadError(
            f"cannot import module {module_name!r} of factory {spec!r} ({exc}); is it installed "
            "or on the Python path (PYTHONPATH)? A file path works too: 'path/to/file.py:fn'"
        ) from exc
    except Exception as exc:
        raise ModelLoadError(
            f"importing {module_name!r} for factory {spec!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    fn = getattr(module, attr, None)
    if fn is None:
        public = [n for n in vars(module) if not n.startswith("_") and callable(vars(module)[n])]
        raise ModelLoadError(
            f"module {module_name!r} has no {attr!r} (factory {spec!r}); it has: "
            f"{', '.join(public[:10]) or 'no public callables'}"
        )
    if not callable(fn):
        raise ModelLoadError(
            f"factory {spec!r} names a {type(fn).__name__}, not a function; give a function "
            "that builds the model"
        )
    return fn  # type: ignore[no-any-return]


def _bundled(name: str, device: str | None) -> LoadedModel:
    from camlens import zoo

    # The Keras model's weights are read from a torch checkpoint: both need torch.
    loader = file_loader("torch", name)
    if name == "mobilenet_v2_keras":
        _no_device_for_keras(device, repr(name))
        file_loader("keras", name)
    try:
        model = zoo.mobilenet_v2() if name == "mobilenet_v2" else zoo.mobilenet_v2_keras()
    except CamlensError as exc:  # the weights package is missing
        raise ModelLoadError(str(exc)) from exc
    classes = list(zoo.imagenet_classes())
    if name == "mobilenet_v2":
        return LoadedModel(
            model=loader.place(model, device),
            framework="torch",
            source="bundled ImageNet MobileNetV2 (PyTorch)",
            layout="NCHW",
            input_size=(224, 224),
            channels=3,
            classes=classes,
        )
    return LoadedModel(
        model=model,
        framework="keras",
        source="bundled ImageNet MobileNetV2 (Keras)",
        layout="NHWC",
        input_size=(224, 224),
        channels=3,
        classes=classes,
    )
