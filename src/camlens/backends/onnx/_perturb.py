"""Scoring perturbed inputs on ONNX: masked images, images built channels-first, and ablated
layer outputs run through the layer's tail. At most ``batch_size`` perturbed inputs exist at a
time; everything stays in NumPy on the host (onnxruntime's own device copies aside)."""

from __future__ import annotations

import numpy as np

from camlens._types import Array
from camlens.backends._common import to_host

__all__ = ["ablated", "masked"]


def masked(inputs: np.ndarray, masks: Array, channels_last: bool) -> np.ndarray:
    """Return ``inputs`` (one image) times each ``(B, H, W)`` mask."""
    m = np.asarray(to_host(masks), dtype=inputs.dtype)
    return np.asarray(inputs * (m[..., None] if channels_last else m[:, None]))


def ablated(activation: np.ndarray, chunk: np.ndarray, channels_last: bool) -> np.ndarray:
    """Return copies of one image's ``(K, h, w)`` activation, channel ``chunk[i]`` zeroed in
    copy ``i``, in the tensor's own layout."""
    batch = np.repeat(activation[None], len(chunk), axis=0)
    batch[np.arange(len(chunk)), chunk] = 0
    return batch.transpose(0, 2, 3, 1) if channels_last else batch
