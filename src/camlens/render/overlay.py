"""Colour heatmaps with a matplotlib colormap and blend them over images."""

from __future__ import annotations

import difflib
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from camlens._types import FloatArray, Size
from camlens.errors import BadInputError
from camlens.render._image import as_numpy, to_rgb_float

if TYPE_CHECKING:
    from matplotlib.colors import Colormap

__all__ = ["OUTSIDE_BRIGHTNESS", "colorize", "grey_out", "map_at_size", "overlay", "region_at_size"]

#: Brightness of the grey that pixels outside a region get in overlays: their luma times this.
OUTSIDE_BRIGHTNESS = 0.5
#: ITU-R BT.601 luma weights of R, G, B (what PIL's ``convert("L")`` uses).
LUMA = (0.299, 0.587, 0.114)


def colorize(
    cam_map: Any, cmap: str = "jet", *, vmin: float = 0.0, vmax: float = 1.0
) -> npt.NDArray[np.uint8]:
    """Colour one heatmap with a matplotlib colormap.

    Values are scaled linearly so that ``vmin`` takes the colormap's first colour and ``vmax`` its
    last; values outside ``[vmin, vmax]`` are clipped.

    Args:
        cam_map: One ``(H, W)`` map (NumPy array, framework tensor or array-like).
        cmap: Name of a colormap in matplotlib's registry (``"jet"``, ``"viridis"``, ...).
        vmin: The value shown with the colormap's first colour.
        vmax: The value shown with the colormap's last colour; must be greater than ``vmin``.

    Returns:
        A uint8 array of shape ``(H, W, 3)``.

    Raises:
        BadInputError: If the map is not 2-D or not finite, ``vmin >= vmax``, or the colormap name
            is unknown.
    """
    if not (math.isfinite(vmin) and math.isfinite(vmax) and vmin < vmax):
        raise BadInputError(f"need finite vmin < vmax; got vmin={vmin!r}, vmax={vmax!r}")
    values = _check_map(cam_map)
    unit = np.clip((values.astype(np.float64) - vmin) / (vmax - vmin), 0.0, 1.0)
    return _to_uint8(_apply_colormap(unit, get_colormap(cmap)))


def overlay(
    image: Any,
    cam_map: Any,
    *,
    cmap: str = "jet",
    alpha: float = 0.5,
    region: Any = None,
) -> Image.Image:
    """Blend a coloured heatmap over an image.

    The image is brought to float RGB in [0, 1] (see `to_rgb_float`), the map is clipped to
    [0, 1] and, if its size differs, resized bilinearly to the image's; then
    ``(1 - alpha) * image + alpha * colormap(map)`` is rounded to 8-bit RGB. Outside a
    ``region`` the pixels are the image greyed out instead (:func:`grey_out`: no heat colour).

    Args:
        image: One image: ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)``, uint8 or float in any range,
            a NumPy array, framework tensor or PIL image.
        cam_map: One ``(h, w)`` map with values in [0, 1], e.g. ``explanation.maps[i]``.
        cmap: Name of a colormap in matplotlib's registry.
        alpha: Weight of the heatmap, in [0, 1]: 0 returns the image, 1 the coloured map.
        region: Optional ``(h, w)`` bool mask, True inside (e.g. ``explanation.region[i]``),
            resized to the image with nearest neighbours if its size differs.

    Returns:
        An RGB PIL image of the image's size.

    Raises:
        BadInputError: If the image, map or region is unusable, ``alpha`` is outside [0, 1]
            or the colormap name is unknown.
    """
    rgb = to_rgb_float(image)
    colormap = get_colormap(cmap)
    check_alpha(alpha)
    size = (rgb.shape[0], rgb.shape[1])
    unit_map = map_at_size(cam_map, size)
    pixels = blend(rgb, unit_map, colormap, alpha)
    if region is not None:
        outside = ~region_at_size(region, size)
        pixels[outside] = grey_out(rgb[outside])
    return Image.fromarray(pixels)


def grey_out(rgb: FloatArray) -> npt.NDArray[np.uint8]:
    """Return float RGB pixels in [0, 1] (``(..., 3)``) desaturated and darkened, as uint8.

    Each pixel becomes the grey of its luma (:data:`LUMA`) times :data:`OUTSIDE_BRIGHTNESS`:
    what overlays show outside a region of interest.
    """
    luma = np.asarray(rgb, dtype=np.float64) @ np.asarray(LUMA)
    grey = np.repeat((OUTSIDE_BRIGHTNESS * luma)[..., None], 3, axis=-1)
    return _to_uint8(grey, in_place=True)


def region_at_size(region: Any, size: Size) -> npt.NDArray[np.bool_]:
    """Return one ``(h, w)`` bool region resized to ``size`` ``(H, W)`` by nearest neighbours.

    Raises:
        BadInputError: If the region is not a 2-D bool mask.
    """
    mask = as_numpy(region)
    if mask.dtype != np.bool_ or mask.ndim != 2 or mask.size == 0:
        raise BadInputError(
            f"a region must be a 2-D bool mask (True inside); got {mask.dtype} {mask.shape}"
        )
    if mask.shape == tuple(size):
        return mask
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (size[1], size[0]), Image.Resampling.NEAREST
    )
    return np.asarray(resized) > 127


def get_colormap(name: str) -> Colormap:
    """Return the colormap called ``name`` from matplotlib's registry.

    Raises:
        BadInputError: If there is no such colormap; the message lists close names.
    """
    import matplotlib

    if not isinstance(name, str):
        raise BadInputError(f"cmap must be a colormap name (str); got {type(name).__name__}")
    try:
        return matplotlib.colormaps[name]
    except KeyError:
        names = list(matplotlib.colormaps)
        close = difflib.get_close_matches(name, names, n=3) or difflib.get_close_matches(
            name.lower(), names, n=3
        )
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else "e.g. 'jet'"
        raise BadInputError(f"unknown colormap {name!r}; {hint}") from None


def check_alpha(alpha: float) -> None:
    """Raise `BadInputError` unless ``alpha`` is a number in [0, 1]."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise BadInputError(f"alpha must be a number in [0, 1]; got {alpha!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise BadInputError(f"alpha must be in [0, 1] (0: image only, 1: map only); got {alpha!r}")


def map_at_size(cam_map: Any, size: Size) -> FloatArray:
    """Return one map clipped to [0, 1] and resized bilinearly to ``size`` ``(H, W)``.

    Raises:
        BadInputError: If the map is not 2-D, is empty or has NaN/infinite values.
    """
    values = np.clip(_check_map(cam_map), 0.0, 1.0)
    if values.shape != size:
        resized = Image.fromarray(values).resize((size[1], size[0]), Image.Resampling.BILINEAR)
        values = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    return values


def blend(
    rgb: FloatArray, unit_map: FloatArray, colormap: Colormap, alpha: float
) -> npt.NDArray[np.uint8]:
    """Return ``(1 - alpha) * rgb + alpha * colormap(unit_map)`` as uint8 RGB pixels."""
    mixed = _apply_colormap(unit_map, colormap)  # a new array: computed in place from here
    mixed *= alpha
    mixed += (1.0 - alpha) * rgb.astype(np.float64)
    return _to_uint8(mixed, in_place=True)


def _check_map(cam_map: Any) -> FloatArray:
    """Return one map as a float32 ``(H, W)`` array, rejecting other ranks and non-finite values."""
    arr = as_numpy(cam_map)
    if arr.ndim != 2:
        hint = "; pass one map, e.g. maps[i]" if arr.ndim == 3 else ""
        raise BadInputError(f"a map must be 2-D (H, W); got shape {arr.shape}{hint}")
    if arr.size == 0:
        raise BadInputError(f"map has no values (shape {arr.shape})")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.issubdtype(
        arr.dtype, np.complexfloating
    ):
        raise BadInputError(f"map has dtype {arr.dtype}; pass real numbers")
    values = arr.astype(np.float32)
    if not np.isfinite(values).all():
        raise BadInputError("map contains NaN or infinite values; a heatmap must be finite")
    return values


def _apply_colormap(unit: npt.NDArray[Any], colormap: Colormap) -> npt.NDArray[np.float64]:
    """Return the float RGB colours (alpha dropped) of values in [0, 1].

    The same colours as ``colormap(unit)``, by the same rule (index ``floor(x * N)`` computed
    in the input's float type, ``x == 1`` taking the last of the ``N`` entries), read from the
    colormap's table directly: several times faster on large pictures.
    """
    n = int(colormap.N)
    lut = np.asarray(colormap(np.arange(n)), dtype=np.float64)[:, :3]
    values = np.asarray(unit)
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    index = (values * values.dtype.type(n)).astype(np.intp)
    np.clip(index, 0, n - 1, out=index)
    colours: npt.NDArray[np.float64] = lut[index]
    return colours


def _to_uint8(unit_rgb: npt.NDArray[Any], *, in_place: bool = False) -> npt.NDArray[np.uint8]:
    """Round float colours in [0, 1] to uint8 (``in_place``: reuse ``unit_rgb``'s memory)."""
    scaled: npt.NDArray[Any] = np.multiply(unit_rgb, 255.0, out=unit_rgb if in_place else None)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)
