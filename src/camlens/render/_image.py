"""Bring the images and maps users hand to `camlens.render` to one NumPy form."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from camlens._types import FloatArray
from camlens.backends._common import to_host
from camlens.errors import BadInputError

__all__ = ["as_numpy", "to_rgb_float"]

#: A float image whose maximum exceeds 1 by no more than this is still a [0, 1] image (float
#: rounding in a normalise/denormalise round trip); dividing it by 255 would turn it black.
_UNIT_RANGE_SLACK = 1e-3

_CHANNEL_COUNTS = (1, 3, 4)


def as_numpy(x: Any) -> npt.NDArray[Any]:
    """Return ``x`` as a NumPy array without importing any framework.

    A framework tensor is copied off its device and autograd (bfloat16 widened to float32);
    anything else (NumPy, JAX, TensorFlow, PIL images, nested lists) goes through
    `numpy.asarray`.

    Args:
        x: An array-like.

    Returns:
        A NumPy array (not copied where NumPy can avoid it).
    """
    return to_host(x)


def to_rgb_float(image: Any) -> FloatArray:
    """Convert one image of any common layout and value range to float RGB in [0, 1].

    Layouts: ``(H, W)`` grayscale, ``(H, W, C)`` or ``(C, H, W)`` with ``C`` in {1, 3, 4}. The
    channel axis is the end whose size is 1, 3 or 4; when both ends qualify (a ``(3, 4, 3)``
    array) channels-last wins. One channel is repeated to gray RGB; a fourth (alpha) is dropped.

    Values, by dtype:

    - ``bool``: False is black, True is white.
    - ``uint8``: divided by 255; other unsigned integers by their dtype's maximum (65535 for
      16-bit PNGs).
    - floats and signed integers (which have no conventional range: ``np.array`` of Python ints
      gives int64): kept if within [0, 1] (a maximum up to 1.001, float rounding, is clipped to
      1 rather than read as a dark 0-255 image); divided by 255 if within [0, 255] with a
      maximum above 1; otherwise (e.g. an ImageNet-normalised tensor with negative values)
      min-max scaled over the whole image. A constant image outside both ranges becomes black.

    Args:
        image: One image: a NumPy array, a framework tensor (duck-typed, never imported), a PIL
            image or anything `numpy.asarray` accepts.

    Returns:
        A float32 array of shape ``(H, W, 3)`` with values in [0, 1].

    Raises:
        BadInputError: If the image has a batch axis, an unrecognised layout or dtype, no pixels,
            or NaN/infinite values.
    """
    arr = _image_array(image)
    arr = _channels_last_rgb(arr)
    return _unit_range(arr).astype(np.float32)


def _image_array(image: Any) -> npt.NDArray[Any]:
    """Return ``image`` as a NumPy array, converting palette and other odd PIL modes to RGB."""
    mode = getattr(image, "mode", None)
    if isinstance(mode, str) and hasattr(image, "convert") and mode not in _PIL_DIRECT_MODES:
        image = image.convert("RGBA" if "A" in mode else "RGB")
    arr = as_numpy(image)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise BadInputError(f"image has dtype {arr.dtype}; pass a numeric or boolean array")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise BadInputError(f"image has complex dtype {arr.dtype}; pass real pixel values")
    return arr


#: PIL modes whose NumPy view is already a gray, RGB or RGBA image with a meaningful dtype.
_PIL_DIRECT_MODES = frozenset({"1", "L", "RGB", "RGBA", "I", "I;16", "F"})


def _channels_last_rgb(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Return an ``(H, W, 3)`` view of a 2-D or 3-D image array, channels last, alpha dropped."""
    if arr.ndim == 4:
        raise BadInputError(
            f"image has shape {arr.shape}, which looks like a batch; pass one image, "
            f"e.g. images[0] (render functions take a single (H, W, C) or (C, H, W) image)"
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.ndim == 3:
        if arr.shape[-1] in _CHANNEL_COUNTS:
            pass
        elif arr.shape[0] in _CHANNEL_COUNTS:
            arr = np.moveaxis(arr, 0, -1)
        else:
            raise BadInputError(
                f"image has shape {arr.shape}; expected (H, W), (H, W, C) or (C, H, W) "
                f"with C in {_CHANNEL_COUNTS}"
            )
    else:
        raise BadInputError(
            f"image has {arr.ndim} dimension(s) (shape {arr.shape}); expected (H, W), "
            f"(H, W, C) or (C, H, W)"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise BadInputError(f"image has no pixels (shape {arr.shape} as (H, W, C))")
    if arr.shape[-1] == 1:
        return np.repeat(arr, 3, axis=-1)
    return arr[:, :, :3]


def _unit_range(arr: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Map pixel values to [0, 1] by the dtype and value rules of `to_rgb_float`."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        return arr.astype(np.float64) / float(np.iinfo(arr.dtype).max)
    values = arr.astype(np.float64)
    if not np.isfinite(values).all():
        raise BadInputError("image contains NaN or infinite values; pass finite pixel values")
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0.0 and hi <= 1.0 + _UNIT_RANGE_SLACK:
        return np.minimum(values, 1.0)
    if lo >= 0.0 and hi <= 255.0:
        return values / 255.0
    if hi == lo:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)
