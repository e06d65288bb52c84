"""An HTML report of a `camlens explain` output folder: settings, images, summaries, cohort.

>>> camlens.report.write_report("camlens-out")      # writes camlens-out/index.html
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from camlens.report._html import render_html
from camlens.report._read import read_folder

__all__ = ["write_report"]

REPORT_FILE = "index.html"


def write_report(folder: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write ``index.html`` into an output folder of `camlens explain`, from the files it holds.

    The page shows the run settings (model, layer, target, preprocessing, camlens version, date)
    with a colour bar of the colormap; a grid with one row per image (thumbnail, file name,
    prediction: a class, or a regressor's value) and one column per method (overlay, explained
    unit and score, metric values if computed); a summary per method (its maps, how many are
    near-flat or empty, each metric's mean and standard deviation); the images that failed;
    ``compare.json``'s method table if present; and, once `camlens cohort` has run on the
    folder (``cohort.json``), a cohort section: the groups' mean maps on one colour scale with
    its range, the region table and the stability figures. Image paths are shown from the
    input they came from on (``run.json``'s ``inputs``), never as absolute paths. A search
    box filters rows by image or class name and a menu sorts them by name, prediction, score or
    any metric. The page is self-contained: its styles and script are inline and every link is
    relative, so the folder can be moved, zipped or opened offline.

    The folder may still be growing: call this again at any time. A trailing result line that is
    incomplete (an interrupted run) is skipped and mentioned on the page. The file is replaced
    atomically, so a browser never reads half a page.

    Args:
        folder: The output folder (holding ``run.json``, ``results.jsonl`` and optionally
            ``failures.jsonl``, ``compare.json`` and ``cohort.json``).
        title: The page's title; "camlens report" by default.

    Returns:
        The path of the written ``index.html``.

    Raises:
        BadInputError: If ``folder`` is not a folder or has no readable ``run.json``.
    """
    path = Path(folder)
    html = render_html(read_folder(path), title)
    target = path / REPORT_FILE
    fd, tmp = tempfile.mkstemp(prefix=".index-", suffix=".html.tmp", dir=path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as file:
            file.write(html)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
