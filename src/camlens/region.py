"""Regions of interest: bool masks that limit where a map is looked at (pure NumPy)."""

from __future__ import annotations

import numpy as np

from camlens.errors import BadInputError

__all__ = ["AUTO_FOV", "auto_fov", "explain_region", "fov_masks", "region_masks"]

#: The region that asks for each image's circular field of view (:func:`auto_fov`).
AUTO_FOV = "auto-fov"


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


def explain_region(region: object, count: int, shape: tuple[int, int]) -> np.ndarray:
    """Return an explainer's ``region=`` mask as one bool ``(count, H, W)`` array per image.

    Args:
        region: A bool-like ``(H, W)`` mask for every image or ``(count, H, W)`` masks, one
            each: bool, or numbers that are all 0 or 1. True (1) is inside.
        count: Number of images.
        shape: ``(H, W)`` of the inputs.

    Returns:
        A new C-contiguous bool array (never a view of ``region``).

    Raises:
        BadInputError: The mask is not bool-like, its shape fits neither form, or it leaves an
            image without a pixel inside.
    """
    mask = np.asarray(region)
    if mask.dtype != np.bool_:
        numeric = mask.dtype.kind in "iuf"
        if not numeric or not np.isin(mask, (0, 1)).all():
            raise BadInputError(
                f"region must be a bool mask (True inside) or hold only 0 and 1; got dtype "
                f"{mask.dtype}"
                + (
                    " with other values: threshold it first, e.g. region=mask > 0"
                    if numeric
                    else ""
                )
            )
        mask = mask != 0
    if mask.shape == tuple(shape):
        mask = np.broadcast_to(mask, (count, *shape))
    if mask.shape != (count, *shape):
        raise BadInputError(
            f"region must be an (H, W) = {tuple(shape)} mask for every image or (N, H, W) = "
            f"{(count, *shape)}, one per image, at the input's resolution; got shape "
            f"{mask.shape}. Resize the mask to the input (nearest neighbour keeps it a mask)."
        )
    empty = np.flatnonzero(~mask.reshape(count, -1).any(axis=1)).tolist()
    if empty:
        raise BadInputError(
            f"region leaves no pixel inside for image(s) {empty[:10]}; give a mask with True "
            "pixels for every image, or region=None to use the whole image"
        )
    return np.array(mask, dtype=np.bool_, order="C")  # a copy, never the caller's memory


def fov_masks(batch: np.ndarray, *, channels_last: bool) -> np.ndarray:
    """Return :func:`auto_fov` of each image of a batch, as one bool ``(N, H, W)`` array.

    Args:
        batch: ``(N, C, H, W)`` images (``(N, H, W, C)`` when ``channels_last``), in any
            numeric range: the model's preprocessed input, whose per-channel normalisation
            ``(x - mean) / std`` keeps the black surround of a fundus photo its darkest part.
        channels_last: Whether the channel axis is the last one.

    Raises:
        BadInputError: The batch is not 4-D, or an image has no lit field of view.
    """
    images = np.asarray(batch)
    if images.ndim != 4:
        raise BadInputError(
            f"region='{AUTO_FOV}' thresholds images: the input must be an (N, C, H, W) or "
            f"(N, H, W, C) batch; got shape {images.shape}. Pass a mask as the region instead."
        )
    if not channels_last:
        images = np.moveaxis(images, 1, -1)
    masks = []
    for i, image in enumerate(images):
        try:
            masks.append(auto_fov(image))
        except BadInputError as exc:
            raise BadInputError(f"image {i}: {exc}") from None
    return np.stack(masks)
