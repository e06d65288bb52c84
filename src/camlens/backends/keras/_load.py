"""Loading Keras 3 models from ``.keras`` and HDF5 files, in Keras's safe mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from camlens.errors import ModelLoadError

__all__ = ["channels_last", "input_shape", "load"]


def load(path: Path, *, trust_code: bool = False) -> Any:
    """Load a model for inference: ``compile=False``, and ``safe_mode=True`` unless trusted.

    Safe mode refuses files that would run Python code on loading (a ``Lambda`` layer's
    serialised bytecode) and custom objects from modules outside Keras; ``trust_code=True``
    (``--trust-pickle``) turns it off, for files from a source the user trusts.
    """
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=not trust_code)
    except Exception as exc:
        text = str(exc)
        if "safe_mode" in text:
            advice = (
                "it holds Python code (a Lambda layer?), which Keras's safe mode refuses to "
                "load; camlens loads it only with --trust-pickle (trust_pickle=True), for files "
                "from a source you trust"
            )
        elif "Unknown" in text or "custom_objects" in text or "Could not locate" in text:
            advice = (
                "it uses custom layers or functions Keras does not know: load it yourself with "
                "keras.saving.load_model(path, custom_objects=...) and pass the model to camlens"
            )
        else:
            advice = "is it truncated, corrupt or saved by an incompatible Keras?"
        first = text.strip().splitlines()[0] if text.strip() else ""
        raise ModelLoadError(
            f"Keras cannot load {path.name!r} ({type(exc).__name__}: {first[:300]}); {advice}"
        ) from exc
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"{path.name!r} holds a {type(model).__name__}, not a keras.Model")
    return model


def input_shape(model: Any) -> tuple[int | None, ...] | None:
    """Return the model's single input shape (batch axis first), or None if it has no graph."""
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        return None
    return tuple(d if isinstance(d, int) else None for d in inputs[0].shape)


def channels_last() -> bool:
    """Return whether Keras's convolutions take channels-last images."""
    return bool(keras.config.image_data_format() == "channels_last")
