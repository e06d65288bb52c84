"""The cohort grid: group mean maps side by side on ONE colour scale."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from camlens.cohort import CohortResult
from camlens.render.overlay import get_colormap

__all__ = ["cohort_grid"]


def cohort_grid(result: CohortResult, *, cmap: str = "jet", cell: int = 160) -> Image.Image:
    """Return the groups' mean maps side by side, with ONE colour scale and a labelled bar.

    Args:
        result: What :func:`camlens.cohort` returned.
        cmap: Matplotlib colormap name.
        cell: Side of each tile in pixels.
    """
    groups = result.groups or (result.overall,)
    means = [g.mean for g in groups]
    low = min(float(m.min()) for m in means)
    high = max(float(m.max()) for m in means)
    span = high - low if high > low else 1.0
    colormap = get_colormap(cmap)
    label_h, bar_h = 18, 26
    canvas = Image.new("RGB", (cell * len(groups), cell + label_h + bar_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (g, m) in enumerate(zip(groups, means, strict=True)):
        rgb = np.asarray(colormap((m - low) / span))[..., :3]
        tile = Image.fromarray(np.round(rgb * 255).astype(np.uint8)).resize((cell, cell))
        canvas.paste(tile, (i * cell, label_h))
        draw.text((i * cell + 4, 3), f"{g.label} (n={g.count})", fill="black")
    ramp = np.asarray(colormap(np.linspace(0, 1, canvas.width)))[None, :, :3]
    bar = Image.fromarray(np.round(np.repeat(ramp, 8, axis=0) * 255).astype(np.uint8))
    canvas.paste(bar, (0, label_h + cell + 2))
    draw.text((2, label_h + cell + 12), f"{low:.3g}", fill="black")
    draw.text((canvas.width - 40, label_h + cell + 12), f"{high:.3g}", fill="black")
    return canvas
