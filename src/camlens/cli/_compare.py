"""`camlens compare`: a methods x metrics table for a model and images, into the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image

import camlens
import camlens.methods
import camlens.metrics
import camlens.report
from camlens.cli import _common
from camlens.cli._folder import COMPARE_CSV, COMPARE_MD, write_file
from camlens.io import find_images
from camlens.io._images import read_image_and_notes
from camlens.report._read import COMPARE_FILE, RUN_FILE

DEFAULT_METRICS = ("deletion", "insertion", "average_drop", "increase", "win")


@click.command("compare")
@_common.run_arguments(
    "Folder for compare.csv/.md/.json and the report (may hold an explain run).",
    ("gradcam", "gradcam++", "layercam", "eigencam"),
)
@click.option(
    "--metric",
    "metric_names",
    multiple=True,
    default=DEFAULT_METRICS,
    show_default=True,
    type=click.Choice(
        ["deletion", "insertion", "average_drop", "increase", "win", "road", "pointing"]
    ),
    help="Metric; repeat for several (road needs scipy; pointing needs --boxes).",
)
@click.option(
    "--boxes",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help='JSON {"image file name": [y0, x0, y1, x1]} in the image\'s own pixels, for pointing.',
)
@click.option("--steps", default=20, show_default=True, type=click.IntRange(min=2))
@_common.model_options
@_common.preprocess_options
def compare_command(
    model_source: str,
    images: tuple[str, ...],
    out_dir: Path,
    methods: tuple[str, ...],
    method_options: tuple[str, ...],
    aug_smooth: bool,
    eigen_smooth: bool,
    metric_names: tuple[str, ...],
    boxes: Path | None,
    layer: str,
    layer_layout: str,
    grid: str | None,
    target: str,
    steps: int,
    **options: Any,
) -> None:
    """Score each method's maps on IMAGES with faithfulness metrics; one row per method.

    Writes compare.csv, compare.md and compare.json to --out and adds the table to its report
    (index.html). Lower is better for deletion and average_drop, higher for the others. On an
    ONNX model (gradient-free methods only) the default methods are ablationcam, scorecam and
    eigencam.
    """
    loaded = _common.load(model_source, options)
    methods = _common.chosen_methods(loaded, methods, "compare")
    preprocess = _common.preprocessing(loaded, options)
    parsed_target = _common.parse_target(target)
    placed = _common.layout_arguments(layer_layout, grid)
    names = list(dict.fromkeys(methods))
    hyper = _common.method_arguments(names, method_options)
    try:
        built = [camlens.methods.get_method(name, **hyper[name]) for name in names]
    except camlens.CamlensError as exc:
        raise click.BadParameter(str(exc), param_hint="--method/--method-option") from exc
    found = find_images(images)
    _common.warn_missing(found)
    pixels: list[np.ndarray] = []
    used: list[Path] = []
    failures: list[tuple[str, str]] = []
    notes: list[str] = []
    for path in found.images:
        try:
            image, image_notes = read_image_and_notes(path, max_size=2 * max(preprocess.size))
        except Exception as exc:  # camlens's error, or a decoder's own on a malformed file
            message = _common.read_failure(path, exc)
            failures.append((_common.shown_text(str(path)), _common.shown_text(message)))
            continue
        pixels.append(image)
        used.append(path)
        notes.extend(_common.shown_text(note) for note in image_notes)
    if not pixels:
        raise click.ClickException("no readable images to compare on")
    box_list = _boxes(boxes, used, preprocess.size) if "pointing" in metric_names else None
    x = preprocess(pixels)

    with _common.progress_bar(len(methods), "comparing methods") as advance:
        try:
            table = camlens.metrics.compare(
                loaded.model,
                x,
                built,
                layer=None if layer == "auto" else layer,
                target=parsed_target,
                metrics=list(dict.fromkeys(metric_names)),
                boxes=box_list,
                steps=steps,
                progress=lambda done, total: advance(1),
                aug_smooth=aug_smooth,
                eigen_smooth=eigen_smooth,
                **placed,
            )
        except camlens.CamlensError as exc:
            raise click.ClickException(str(exc)) from exc

    out_dir.mkdir(parents=True, exist_ok=True)
    write_file(out_dir / COMPARE_CSV, table.to_csv().encode("utf-8"))
    write_file(out_dir / COMPARE_MD, table.to_markdown().encode("utf-8"))
    payload = {
        "columns": list(table.columns),
        "rows": [[r.get(c) for c in table.columns] for r in table.rows],
    }
    write_file(out_dir / COMPARE_FILE, json.dumps(payload, indent=1).encode("utf-8"))
    if not (out_dir / RUN_FILE).exists():  # a folder of its own: the report needs the settings
        run = _common.run_settings(
            loaded,
            preprocess,
            list(dict.fromkeys(methods)),
            layer,
            target,
            layer_layout=layer_layout,
            grid=grid,
            method_options={name: chosen for name, chosen in hyper.items() if chosen},
            aug_smooth=aug_smooth,
            eigen_smooth=eigen_smooth,
        )
        write_file(out_dir / RUN_FILE, json.dumps(run, indent=2).encode("utf-8"))
    report = camlens.report.write_report(out_dir)
    click.echo(table.to_markdown(), nl=False)
    click.echo(f"{len(used)} image(s); report: {report}")
    _common.print_failures(failures)
    _common.print_notes(notes)
    if failures:
        sys.exit(_common.EXIT_SOME_FAILED)


def _boxes(path: Path | None, used: list[Path], size: tuple[int, int]) -> list[list[float]]:
    """Return each image's box scaled to the model input, from a JSON file keyed by file name.

    Boxes are in the pixels of the image as shown upright (EXIF orientation applied).
    """
    if path is None:
        raise click.BadParameter("the pointing metric needs --boxes", param_hint="--metric")
    try:
        given = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--boxes") from exc
    result = []
    for image in used:
        box = given.get(image.name, given.get(str(image)))
        if not (isinstance(box, list) and len(box) == 4):
            raise click.BadParameter(
                f"no [y0, x0, y1, x1] box for {image.name!r} in {path}", param_hint="--boxes"
            )
        height, width = _upright_size(image)
        sy, sx = size[0] / height, size[1] / width
        y0, x0, y1, x1 = (float(v) for v in box)
        result.append([y0 * sy, x0 * sx, y1 * sy, x1 * sx])
    return result


def _upright_size(path: Path) -> tuple[int, int]:
    """Return ``(H, W)`` of an image as shown upright, from its header."""
    with Image.open(path) as im:
        width, height = im.size
        rotated = im.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientation: a quarter turn
    return (width, height) if rotated else (height, width)
