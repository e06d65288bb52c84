"""Reading what the command line and reports work on: model files and bundled models."""

from __future__ import annotations

from camlens.io._models import BUNDLED_MODELS, LoadedModel, load_model

__all__ = ["BUNDLED_MODELS", "LoadedModel", "load_model"]
