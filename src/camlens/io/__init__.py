"""Reading what the command line and reports work on: images, model files, bundled models."""

from __future__ import annotations

from camlens.io._images import IMAGE_EXTENSIONS, ImageList, find_images, image_key, read_image
from camlens.io._models import BUNDLED_MODELS, LoadedModel, load_model
from camlens.io._preprocess import PRESETS, Preprocess

__all__ = [
    "BUNDLED_MODELS",
    "IMAGE_EXTENSIONS",
    "PRESETS",
    "ImageList",
    "LoadedModel",
    "Preprocess",
    "find_images",
    "image_key",
    "load_model",
    "read_image",
]
