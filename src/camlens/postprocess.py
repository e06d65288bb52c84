"""Shared post-processing, written once for every method: ReLU, upsampling, normalisation.

Array-API maths: it runs where the arrays live (NumPy, torch CPU/CUDA, JAX) without copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from array_api_compat import device

from camlens._types import Array, Size
from camlens.backends._common import namespace
from camlens.errors import BadInputError


def bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """Return the ``(out_size, in_size)`` matrix of 1-D linear interpolation.

    Pixel centres are aligned (half-pixel offsets, edges clamped): the convention of
    ``torch.nn.functional.interpolate(..., align_corners=False)`` and of PIL's bilinear
    resampling when enlarging.
    """
    matrix: np.ndarray = _bilinear_matrix(out_size, in_size).copy()
    return matrix


@lru_cache(maxsize=64)
def _bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """:func:`bilinear_matrix`, cached (every call of an explainer resizes to the same size)."""
    scale = in_size / out_size
    src = np.clip((np.arange(out_size) + 0.5) * scale - 0.5, 0.0, in_size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lo), 1.0 - frac)
    np.add.at(matrix, (rows, hi), frac)
    matrix.flags.writeable = False
    return matrix


@lru_cache(maxsize=32)
def _matrix_on(
    xp: Any, out_size: int, in_size: int, dtype: Any, dev: Any, *, transpose: bool
) -> Array:
    """Return :func:`bilinear_matrix` (or its transpose) as an array of ``xp`` on ``dev``.

    Cached: building and copying the matrix to the maps' library and device on every call cost
    as much as the resize itself. The arrays are a few KiB.
    """
    matrix = _bilinear_matrix(out_size, in_size)
    # A writable copy: torch warns when it is handed a read-only buffer it could share.
    return xp.asarray(np.array(matrix.T if transpose else matrix), dtype=dtype, device=dev)


def resize(maps: Array, size: Size) -> Array:
    """Resize ``(M, h, w)`` maps to ``size = (H, W)`` bilinearly, as two matrix products.

    Both products are single 2-D matrix multiplications over the whole stack (not ``M`` small
    batched ones, which BLAS runs far slower, especially on a busy machine).
    """
    xp = namespace(maps)
    m, h, w = maps.shape
    big_h, big_w = size
    if (h, w) == (big_h, big_w):
        return maps
    dev = device(maps)
    rows = _matrix_on(xp, big_h, h, maps.dtype, dev, transpose=False)
    cols = _matrix_on(xp, big_w, w, maps.dtype, dev, transpose=True)
    if m == 1:  # the same products, without the stacking views
        return xp.reshape(rows @ (xp.reshape(maps, (h, w)) @ cols), (1, big_h, big_w))
    wide = xp.reshape(xp.reshape(maps, (m * h, w)) @ cols, (m, h, big_w))  # (M, h, W)
    stacked = xp.reshape(xp.permute_dims(wide, (1, 0, 2)), (h, m * big_w))  # (h, M * W)
    tall = xp.reshape(rows @ stacked, (big_h, m, big_w))  # (H, M, W)
    return xp.permute_dims(tall, (1, 0, 2))


#: How final maps are scaled: the choices of ``normalize=``.
Normalize = Literal["minmax", "max", "none"]
NORMALIZE_CHOICES: tuple[str, ...] = ("minmax", "max", "none")


def check_normalize(mode: object) -> Normalize:
    """Return ``mode`` if it is one of :data:`NORMALIZE_CHOICES`; raise a clear error otherwise."""
    if mode not in NORMALIZE_CHOICES:
        raise BadInputError(
            f"normalize must be one of {', '.join(map(repr, NORMALIZE_CHOICES))}; got {mode!r}"
        )
    return mode  # type: ignore[return-value]  # checked just above


def normalise(
    maps: Array, *, signed: bool, mode: Normalize = "minmax", region: Array | None = None
) -> tuple[Array, Array]:
    """Scale each ``(M, H, W)`` map for display, as ``mode`` says.

    - ``"minmax"``: ``(x - min) / (max - min)``, in ``[0, 1]``: every map spans the whole scale,
      however weak or flat it is.
    - ``"max"``: ``x / max``, in ``[0, 1]`` for rectified maps (the Grad-CAM paper's and most
      hand-written code's ``ReLU(L) / max``): a near-flat map stays near-uniform.
    - ``"none"``: the values as they are, in the layer's units.

    A signed map (``signed``, from ``relu=False``) is divided by its largest magnitude under
    ``"minmax"`` and ``"max"`` alike, into ``[-1, 1]``: shifting it would move its zero, which
    is what the sign means. A map that cannot be scaled (constant under min-max, all zeros
    otherwise) becomes zeros instead of NaN. With a ``region`` (a bool ``(M, H, W)`` array of
    the maps' library, True inside), the minimum, maximum and magnitude are taken over the
    region's pixels only and the pixels outside it are set to 0 (under ``"none"`` too).
    Returns the scaled maps and an ``(M,)`` boolean array marking those degenerate rows (for
    ``"none"``: the maps that are all zeros, in the region).
    """
    xp = namespace(maps)
    axes = tuple(range(1, maps.ndim))
    if signed or mode != "minmax":
        shifted = maps
        magnitude = xp.abs(maps)
        if region is not None:
            magnitude = xp.where(region, magnitude, xp.zeros_like(maps))  # 0 changes no max
        span = xp.max(magnitude, axis=axes, keepdims=True)
    else:
        for_min, for_max = maps, maps
        if region is not None:  # outside: the row's own max (for the min), min (for the max)
            for_min = xp.where(region, maps, xp.max(maps, axis=axes, keepdims=True))
            for_max = xp.where(region, maps, xp.min(maps, axis=axes, keepdims=True))
        low = xp.min(for_min, axis=axes, keepdims=True)
        shifted = maps - low
        span = xp.max(for_max, axis=axes, keepdims=True) - low
    degenerate = xp.reshape(span == 0, (maps.shape[0],))
    # A degenerate row is all zeros once shifted (constant values minus their minimum, or
    # zeros when signed), so dividing it by 1 instead of 0 leaves exact zeros.
    scaled = maps if mode == "none" else shifted / xp.where(span == 0, 1.0, span)
    if region is not None:
        scaled = xp.where(region, scaled, xp.zeros_like(scaled))
    return scaled, degenerate


def region_on(region: np.ndarray | None, like: Array) -> Array | None:
    """Return a NumPy bool region as an array of ``like``'s library, on its device."""
    if region is None:
        return None
    xp = namespace(like)
    return xp.asarray(region, device=device(like))


def rectify(maps: Array) -> Array:
    """Return ``max(maps, 0)``."""
    xp = namespace(maps)
    return xp.clip(maps, min=0.0)


def finish(
    cams: Sequence[Array],
    size: Size,
    *,
    relu: bool,
    normalize: Normalize = "minmax",
    combination: str = "mean",
    region: np.ndarray | None = None,
) -> tuple[Array, Array, Array]:
    """Turn per-layer signed maps into final maps at ``size``.

    Each layer's map is rectified (if ``relu``), resized to ``size`` and normalised (as
    ``normalize`` says, see :func:`normalise`); several layers are combined, by their mean
    (``combination="mean"``) or their product (``"product"``, RefineCAM), and normalised again
    (with ``"none"``, their values are combined as they are). With a ``region`` (bool
    ``(M, H, W)`` NumPy, at ``size``), every normalisation reads only the region's pixels and
    sets the others to 0 (see :func:`normalise`). The signed ``raw`` map is the single layer's
    map, or for several layers the mean (or product) of each layer's map divided by its
    largest magnitude, resized to the finest layer's resolution; the region leaves it whole.

    Returns:
        ``(maps (M, H, W), raw (M, h, w), degenerate (M,) bool)``.
    """
    xp = namespace(*cams)
    inside = region_on(region, cams[0])
    per_layer = [
        normalise(
            resize(rectify(c) if relu else c, size),
            signed=not relu,
            mode=normalize,
            region=inside,
        )
        for c in cams
    ]
    if len(per_layer) == 1:
        maps, degenerate = per_layer[0]
        return maps, cams[0], degenerate
    reduce = xp.prod if combination == "product" else xp.mean
    maps, degenerate = normalise(
        reduce(xp.stack([m for m, _ in per_layer]), axis=0),
        signed=not relu,
        mode=normalize,
        region=inside,
    )
    finest = max((c.shape[-2:] for c in cams), key=lambda hw: hw[0] * hw[1])
    raw = reduce(xp.stack([resize(normalise(c, signed=True)[0], finest) for c in cams]), axis=0)
    return maps, raw, degenerate


#: Below this contrast a map counts as near-flat (:func:`map_statistics`).
FLAT_CONTRAST = 0.05


def map_statistics(
    raw: np.ndarray, *, relu: bool, region: np.ndarray | None = None
) -> MapStatistics:
    """Return how strong and how flat each signed ``(M, h, w)`` map is.

    With a ``region`` (bool ``(M, H, W)``, True inside, at the input's resolution), every
    figure reads only the region's pixels at ``(H, W)``, where the maps are: the raw map
    resized bilinearly (:func:`resize`) gives the range, the positive share and a signed
    map's contrast; a rectified map's contrast and emptiness read the raw map as the final
    maps are made (rectified, then resized), so a map empty in the region is one whose final
    map is zeros there. A raw map already at ``(H, W)`` is read as it is.

    - ``raw_min``, ``raw_max``: the signed map's range, in the layer's units.
    - ``contrast``: the share of the colour scale the map spans when scaled by its largest
      magnitude (``normalize="max"``): ``(max - min) / max`` of the positive part for rectified
      maps, ``(max - min) / (2 max |x|)`` for signed ones; 0 for an empty map, 1 for a map
      that reaches from 0 (or ``-max``) to its maximum.
    - ``positive_share``: the positive part's share of the map's absolute mass,
      ``sum max(x, 0) / sum |x|`` (0 for a map of zeros).
    - ``status``: ``"empty"`` (rectified: no positive value, no positive evidence; signed: all
      zeros), ``"flat"`` (contrast below :data:`FLAT_CONTRAST`: min-max scaling would stretch
      a near-uniform map over the whole scale) or ``"ok"``.
    """
    values = np.asarray(raw, dtype=np.float64)
    count = values.shape[0]
    rectified = np.maximum(values, 0.0)
    if region is None:
        inside = np.ones((count, 1), dtype=bool)
    else:
        size = region.shape[1:]
        values, rectified = np.asarray(resize(values, size)), np.asarray(resize(rectified, size))
        inside = np.asarray(region, dtype=bool).reshape(count, -1)
    values = values.reshape(count, -1)
    low = np.where(inside, values, np.inf).min(axis=1)
    high = np.where(inside, values, -np.inf).max(axis=1)
    positive = np.where(inside, np.maximum(values, 0.0), 0.0)
    magnitude = np.where(inside, np.abs(values), 0.0)
    mass = magnitude.sum(axis=1)
    share = np.divide(positive.sum(axis=1), mass, out=np.zeros_like(mass), where=mass > 0)
    if relu:
        # The rectified map as the final maps are made: rectified, then resized.
        shown = rectified.reshape(count, -1)
        top = np.where(inside, shown, 0.0).max(axis=1)
        bottom = np.where(inside, shown, np.inf).min(axis=1)
        empty = top <= 0
        contrast = np.divide(top - bottom, top, out=np.zeros_like(top), where=~empty)
    else:
        scale = magnitude.max(axis=1)
        empty = scale == 0
        contrast = np.divide(high - low, 2 * scale, out=np.zeros_like(scale), where=~empty)
    status = np.where(empty, "empty", np.where(contrast < FLAT_CONTRAST, "flat", "ok"))
    for array in (low, high, contrast, share, status):
        array.setflags(write=False)
    return MapStatistics(
        raw_min=low, raw_max=high, contrast=contrast, positive_share=share, status=status
    )


@dataclass(frozen=True)
class MapStatistics:
    """Per-row figures of map strength (:func:`map_statistics`), each an ``(M,)`` array."""

    raw_min: np.ndarray
    raw_max: np.ndarray
    contrast: np.ndarray
    positive_share: np.ndarray
    status: np.ndarray
