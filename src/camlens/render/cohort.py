"""The cohort grid: group mean maps side by side on ONE colour scale."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from camlens.cohort import CohortResult, GroupSummary
from camlens.render.overlay import get_colormap

__all__ = ["cohort_grid", "cohort_tiles", "shared_scale"]


def _shown(result: CohortResult) -> tuple[GroupSummary, ...]:
    """Return the summaries a grid shows: the groups, or the whole cohort when not grouped."""
    return result.groups or (result.overall,)


def shared_scale(result: CohortResult) -> tuple[float, float]:
    """Return ``(low, high)``: the smallest and largest value over the shown groups' mean maps.

    Every tile of :func:`cohort_grid` and :func:`cohort_tiles` maps ``low`` to the colormap's
    first colour and ``high`` to its last, so equal colours mean equal values across groups.
    """
    means = [g.mean for g in _shown(result)]
    return min(float(m.min()) for m in means), max(float(m.max()) for m in means)


def cohort_tiles(result: CohortResult, *, cmap: str = "jet") -> list[np.ndarray]:
    """Return each shown group's mean map coloured on the shared scale, uint8 ``(H, W, 3)``.

    The groups are those of :func:`cohort_grid`, in its order; the scale is
    :func:`shared_scale`'s (a constant scale, ``low == high``, colours every pixel as ``low``).

    Args:
        result: What :func:`camlens.cohort` returned.
        cmap: Matplotlib colormap name.
    """
    low, high = shared_scale(result)
    span = high - low if high > low else 1.0
    colormap = get_colormap(cmap)
    tiles = []
    for g in _shown(result):
        rgb = np.asarray(colormap((g.mean - low) / span))[..., :3]
        tiles.append(np.round(rgb * 255).astype(np.uint8))
    return tiles


def cohort_grid(result: CohortResult, *, cmap: str = "jet", cell: int = 160) -> Image.Image:
    """Return the groups' mean maps side by side, with ONE colour scale and a labelled bar.

    Args:
        result: What :func:`camlens.cohort` returned.
        cmap: Matplotlib colormap name.
        cell: Side of each tile in pixels.
    """
    groups = _shown(result)
    low, high = shared_scale(result)
    colormap = get_colormap(cmap)
    label_h, bar_h = 18, 26
    canvas = Image.new("RGB", (cell * len(groups), cell + label_h + bar_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (g, rgb) in enumerate(zip(groups, cohort_tiles(result, cmap=cmap), strict=True)):
        canvas.paste(Image.fromarray(rgb).resize((cell, cell)), (i * cell, label_h))
        draw.text((i * cell + 4, 3), f"{g.label} (n={g.count})", fill="black")
    ramp = np.asarray(colormap(np.linspace(0, 1, canvas.width)))[None, :, :3]
    bar = Image.fromarray(np.round(np.repeat(ramp, 8, axis=0) * 255).astype(np.uint8))
    canvas.paste(bar, (0, label_h + cell + 2))
    draw.text((2, label_h + cell + 12), f"{low:.3g}", fill="black")
    draw.text((canvas.width - 40, label_h + cell + 12), f"{high:.3g}", fill="black")
    return canvas
