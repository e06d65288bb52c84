"""Inline display in notebooks: a compact HTML grid of an explanation's maps, never its arrays.

Jupyter calls ``_repr_html_`` on the last value of a cell: :class:`camlens.Explanation` shows its
maps (coloured, or over the images with :func:`show`) with the method, layer, target and each
row's unit and score, as small PNG thumbnails embedded in the page.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image

from camlens._checks import positive_int
from camlens.errors import BadInputError
from camlens.render.overlay import check_alpha, colorize, get_colormap, overlay


class Explanation(Protocol):
    """What is drawn of a :class:`camlens.Explanation` (named here structurally: the record
    module shows itself through this one, so this one cannot import it)."""

    @property
    def maps(self) -> np.ndarray: ...
    @property
    def scores(self) -> np.ndarray: ...
    @property
    def image_index(self) -> np.ndarray: ...
    @property
    def units(self) -> np.ndarray: ...
    @property
    def signs(self) -> np.ndarray: ...
    @property
    def target(self) -> str: ...
    @property
    def score_kind(self) -> str: ...
    @property
    def layers(self) -> tuple[str, ...]: ...
    @property
    def method(self) -> str: ...
    @property
    def relu(self) -> bool: ...
    @property
    def framework(self) -> str: ...
    @property
    def region(self) -> np.ndarray | None: ...

    @property
    def targets_per_image(self) -> int:
        """``T``, the number of rows per image."""
        ...

    def __len__(self) -> int:
        """``M``, the number of rows."""
        ...


__all__ = ["Shown", "explanation_html", "show"]

#: The longer side of a thumbnail, in pixels.
THUMBNAIL = 160
#: The number of rows shown before the rest is summarised in one line.
MAX_ROWS = 24


def show(
    images: Sequence[Any] | np.ndarray,
    explanation: Explanation,
    *,
    cmap: str = "jet",
    alpha: float = 0.5,
    max_rows: int = MAX_ROWS,
) -> Shown:
    """Return the explanation's overlays on ``images``, to display inline in a notebook.

    Outside the explanation's region, if it has one, the images are greyed out.

    Args:
        images: The explained images, in the explained batch's order (as for
            :meth:`camlens.Explanation.overlay`).
        explanation: What :func:`camlens.explain` or an explainer returned for them.
        cmap: Name of a colormap in matplotlib's registry.
        alpha: Weight of the heatmap in the overlays, in [0, 1].
        max_rows: The number of rows shown; the others are counted in one line.

    Returns:
        A :class:`Shown`: Jupyter displays it as a grid; ``.overlays`` holds the PIL images.

    Raises:
        BadInputError: If the number of images is not the explanation's, or an option is
            unusable.
    """
    max_rows = positive_int(max_rows, "max_rows")
    get_colormap(cmap)
    check_alpha(alpha)
    shown = min(len(explanation), max_rows)
    n_images = int(explanation.image_index[-1]) + 1
    if len(images) != n_images:
        raise BadInputError(
            f"got {len(images)} images for an explanation of {n_images}; pass the same images, "
            "in the same order, as the explained batch"
        )
    index, maps, region = explanation.image_index, explanation.maps, explanation.region
    overlays = [
        overlay(
            images[int(index[m])],
            maps[m],
            cmap=cmap,
            alpha=alpha,
            region=None if region is None else region[int(index[m])],
        )
        for m in range(shown)
    ]
    page = explanation_html(explanation, pictures=overlays, max_rows=max_rows)
    return Shown(explanation, overlays, page)


class Shown:
    """An explanation drawn over its images, as Jupyter displays it (:func:`show`).

    Attributes:
        explanation: The explanation drawn.
        overlays: One RGB PIL overlay per row shown, at the image's size.
    """

    def __init__(self, explanation: Explanation, overlays: list[Image.Image], page: str) -> None:
        self.explanation = explanation
        self.overlays = overlays
        self._page = page

    def _repr_html_(self) -> str:
        """Return the grid as HTML, for Jupyter."""
        return self._page

    def __repr__(self) -> str:
        return f"Shown({len(self.overlays)} overlay(s) of {self.explanation!r})"


def explanation_html(
    explanation: Explanation,
    *,
    pictures: Sequence[Image.Image] | None = None,
    cmap: str = "jet",
    max_rows: int = MAX_ROWS,
) -> str:
    """Return an HTML summary of ``explanation``: a header line and one thumbnail per row.

    Args:
        explanation: The explanation to show.
        pictures: One picture per row shown (overlays, from :func:`show`); None shows each
            coloured map alone (``[-1, 1]`` maps of ``relu=False`` with 0 at the colour
            scale's middle).
        cmap: Name of a colormap in matplotlib's registry, for the coloured maps.
        max_rows: The number of rows shown; the others are counted in one line.

    Returns:
        An HTML fragment with the pictures embedded as PNG, no script and no external file.
    """
    max_rows = positive_int(max_rows, "max_rows")
    rows = min(len(explanation), max_rows)
    if pictures is not None and len(pictures) < rows:
        raise BadInputError(f"got {len(pictures)} pictures for {rows} rows shown; pass one per row")
    vmin = 0.0 if explanation.relu else -1.0
    cells = []
    for m in range(rows):
        if pictures is not None:
            picture = pictures[m]
        else:
            picture = Image.fromarray(colorize(explanation.maps[m], cmap, vmin=vmin))
        caption = f"image {int(explanation.image_index[m])} · {_unit(explanation, m)}"
        caption += f"<br>{html.escape(explanation.score_kind)} {float(explanation.scores[m]):.4g}"
        cells.append(
            '<figure style="margin:4px;display:inline-block;text-align:center;'
            'font-size:11px;vertical-align:top">'
            f'<img src="data:image/png;base64,{_png(picture)}" alt="map {m}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    more = len(explanation) - rows
    if more:
        cells.append(f'<div style="font-size:11px">… and {more} more row(s)</div>')
    return (
        '<div class="camlens-explanation">'
        f'<div style="font-family:monospace;font-size:12px">{html.escape(_header(explanation))}'
        f"</div><div>{''.join(cells)}</div></div>"
    )


def summary(explanation: Explanation) -> str:
    """Return a one-line description of ``explanation`` (its ``repr``): no array values."""
    return f"Explanation({_header(explanation)})"


def _header(exp: Explanation) -> str:
    n_images = int(exp.image_index[-1]) + 1
    h, w = exp.maps.shape[1:]
    return (
        f"method={exp.method!r}, layers={', '.join(exp.layers)!r}, target={exp.target!r}, "
        f"{n_images} image(s) x {exp.targets_per_image} target(s), maps {h}x{w}, "
        f"{exp.framework}"
    )


def _unit(exp: Explanation, row: int) -> str:
    unit = int(exp.units[row])
    text = "custom score" if unit < 0 else f"unit {unit}"
    return text + (" (down)" if float(exp.signs[row]) < 0 else "")


def _png(picture: Image.Image) -> str:
    """Return the picture as a base64 PNG at most :data:`THUMBNAIL` pixels on its longer side."""
    small = picture.copy()
    small.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
