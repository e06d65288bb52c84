"""Regions of interest: bool masks that limit where a map is looked at (pure NumPy)."""

from __future__ import annotations

import numpy as np

from camlens.errors import BadInputError

__all__ = ["auto_fov", "region_masks"]


def auto_fov(image: np.ndarray, *, threshold: float | None = None) -> np.ndarray:
    """Return the circular field of view of a fundus photo as a bool ``(H, W)`` mask.

    The photo's brightness (mean over channels) is thresholded (by default at a tenth of the
    way from its darkest to its brightest value, which separates the black surround from the
    lit retina); the disc is then the circle with the same area and centroid as the lit
    pixels, so specks in the surround and dark vessels inside do not change it.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` picture, any numeric range.
        threshold: Brightness above which a pixel is lit, in the image's units.

    Returns:
        Bool mask, True inside the field of view.

    Raises:
        BadInputError: The image is not 2-D or 3-D, or nothing in it is lit.
    """
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 3:
        array = array.mean(axis=-1)
    if array.ndim != 2 or array.size == 0:
        raise BadInputError(f"auto_fov needs an (H, W) or (H, W, C) picture; got {image.shape}.")
    low, high = float(array.min()), float(array.max())
    cut = low + 0.1 * (high - low) if threshold is None else threshold
    lit = array > cut
    if high <= low or not lit.any():
        raise BadInputError(
            "auto_fov found no lit field of view (the picture is uniform or below the "
            "threshold); pass a mask image as the region instead."
        )
    ys, xs = np.nonzero(lit)
    cy, cx = ys.mean(), xs.mean()
    radius = np.sqrt(lit.sum() / np.pi)
    yy, xx = np.ogrid[: array.shape[0], : array.shape[1]]
    return np.asarray((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2)


def region_masks(region: np.ndarray, count: int, shape: tuple[int, int]) -> np.ndarray:
    """Return a region as one bool ``(count, H, W)`` mask per image.

    Args:
        region: Bool ``(H, W)`` mask for every image or ``(count, H, W)`` masks, one each.
        count: Number of images.
        shape: ``(H, W)`` of the maps.

    Raises:
        BadInputError: The mask's shape does not fit, it is not boolean, or a mask is empty.
    """
    mask = np.asarray(region)
    if mask.dtype != np.bool_:
        raise BadInputError(f"region must be a bool mask; got dtype {mask.dtype}.")
    if mask.shape == tuple(shape):
        mask = np.broadcast_to(mask, (count, *shape))
    if mask.shape != (count, *shape):
        raise BadInputError(
            f"region must be (H, W) = {tuple(shape)} or (N, H, W) = {(count, *shape)}; "
            f"got {mask.shape}. Resize the mask to the maps' grid."
        )
    if not mask.reshape(count, -1).any(axis=1).all():
        raise BadInputError("region leaves no pixel of an image; give a mask with True pixels.")
    return mask
