"""Turn heatmaps into pictures: coloured maps, overlays on images, titled grids.

Colormaps come from matplotlib, imported only when a picture is drawn.
"""

from __future__ import annotations

from camlens.render._image import to_rgb_float
from camlens.render.grid import grid, save_grid
from camlens.render.notebook import Shown, show
from camlens.render.overlay import colorize, map_at_size, overlay

__all__ = [
    "Shown",
    "colorize",
    "grid",
    "map_at_size",
    "overlay",
    "save_grid",
    "show",
    "to_rgb_float",
]
