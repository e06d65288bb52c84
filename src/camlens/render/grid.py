"""Lay out images, heatmaps and overlays in a titled grid, one row per explained image."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from camlens._checks import positive_int
from camlens.errors import BadInputError
from camlens.render._image import as_numpy, to_rgb_float
from camlens.render.overlay import blend, check_alpha, get_colormap, map_at_size

__all__ = ["grid", "save_grid"]

#: Width of one panel in inches; its height follows the row's image aspect ratio.
_PANEL_WIDTH_IN = 3.0
#: Extra height of a row, in inches, for its title and column labels.
_ROW_HEADER_IN = 0.55
_PANEL_LABELS = ("image", "heatmap", "overlay")


def grid(
    images: Any,
    maps: Any,
    *,
    titles: Sequence[str] | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
    dpi: int = 100,
) -> Image.Image:
    """Draw one row per (image, map) pair: the image, the heatmap with a colour bar, the overlay.

    Args:
        images: A sequence of images, or an array with a leading batch axis (``(N, C, H, W)``,
            ``(N, H, W, C)`` or ``(N, H, W)``); each image as accepted by `overlay`.
        maps: A ``(N, h, w)`` array or a sequence of ``(h, w)`` maps with values in [0, 1], e.g.
            ``explanation.maps``; each is resized to its image's size.
        titles: One title per row (e.g. ``"tabby cat 0.93"``), or None for no titles.
        cmap: Name of a colormap in matplotlib's registry.
        alpha: Weight of the heatmap in the overlay, in [0, 1].
        dpi: Resolution of the drawing; a panel is 3 inches wide.

    Returns:
        An RGB PIL image.

    Raises:
        BadInputError: If the numbers of images, maps and titles differ, there are none, or any
            image, map or option is unusable.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image_list = _rows(images, "images")
    map_list = _rows(maps, "maps")
    title_list = _check_lengths(image_list, map_list, titles)
    colormap = get_colormap(cmap)
    check_alpha(alpha)
    dpi = positive_int(dpi, "dpi")

    rgbs = [to_rgb_float(image) for image in image_list]
    unit_maps = [
        map_at_size(cam_map, (rgb.shape[0], rgb.shape[1]))
        for rgb, cam_map in zip(rgbs, map_list, strict=True)
    ]
    aspects = [rgb.shape[0] / rgb.shape[1] for rgb in rgbs]
    heights = [_PANEL_WIDTH_IN * aspect + _ROW_HEADER_IN for aspect in aspects]

    fig = Figure(figsize=(3 * _PANEL_WIDTH_IN + 0.6, sum(heights)), dpi=dpi, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    subfigs = fig.subfigures(len(rgbs), 1, squeeze=False, height_ratios=heights)[:, 0]
    for row, (subfig, rgb, unit_map) in enumerate(zip(subfigs, rgbs, unit_maps, strict=True)):
        if title_list is not None:
            subfig.suptitle(title_list[row], fontsize=12)
        ax_image, ax_map, ax_overlay = subfig.subplots(1, 3)
        ax_image.imshow(rgb)
        shown = ax_map.imshow(unit_map, cmap=colormap, vmin=0.0, vmax=1.0)
        colorbar_ax = ax_map.inset_axes((1.04, 0.0, 0.05, 1.0))  # as tall as the picture
        subfig.colorbar(shown, cax=colorbar_ax, ticks=[0.0, 0.5, 1.0])
        ax_overlay.imshow(blend(rgb, unit_map, colormap, alpha))
        for ax, label in zip((ax_image, ax_map, ax_overlay), _PANEL_LABELS, strict=True):
            ax.set_title(label, fontsize=9)
            ax.set_axis_off()

    canvas.draw()  # type: ignore[no-untyped-call]  # backend_agg is unannotated
    rgba = np.asarray(canvas.buffer_rgba())  # type: ignore[no-untyped-call]
    return Image.fromarray(rgba[:, :, :3].copy())


def save_grid(
    path: str | os.PathLike[str],
    images: Any,
    maps: Any,
    *,
    titles: Sequence[str] | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
    dpi: int = 100,
) -> None:
    """Draw `grid` and write it to ``path`` as a PNG (whatever the file's suffix).

    Args:
        path: The file to write.
        images: As for `grid`.
        maps: As for `grid`.
        titles: As for `grid`.
        cmap: As for `grid`.
        alpha: As for `grid`.
        dpi: As for `grid`.

    Raises:
        BadInputError: As for `grid`.
    """
    picture = grid(images, maps, titles=titles, cmap=cmap, alpha=alpha, dpi=dpi)
    picture.save(os.fspath(path), format="PNG")


def _rows(items: Any, what: str) -> list[Any]:
    """Split a batch array or a sequence into a list of its rows."""
    if isinstance(items, (str, bytes)) or items is None:
        raise BadInputError(f"{what} must be a sequence or a batched array; got {items!r}")
    if isinstance(items, (list, tuple)):
        return list(items)
    arr = as_numpy(items)
    if arr.ndim < 3:
        raise BadInputError(
            f"{what} has shape {arr.shape}; expected a leading batch axis, e.g. {what}[None] "
            f"for a single one"
        )
    return list(arr)


def _check_lengths(
    images: list[Any], maps: list[Any], titles: Sequence[str] | None
) -> list[str] | None:
    """Check that images, maps and titles pair up, and return the titles as a list."""
    if not images:
        raise BadInputError("grid needs at least one (image, map) pair; got none")
    if len(images) != len(maps):
        raise BadInputError(
            f"got {len(images)} images and {len(maps)} maps; grid draws one row per (image, map) "
            f"pair, so pass as many of each (for several targets per image, repeat the images)"
        )
    if titles is None:
        return None
    if isinstance(titles, str):
        raise BadInputError("titles must be a sequence of strings, one per row; got one string")
    title_list = [str(title) for title in titles]
    if len(title_list) != len(images):
        raise BadInputError(
            f"got {len(title_list)} titles for {len(images)} rows; pass one per row"
        )
    return title_list
