"""`camlens cohort OUT_DIR`: aggregate the maps an explain run saved (nothing is recomputed)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import click
import numpy as np

import camlens
import camlens.report
from camlens.cli._folder import COHORT_PNG, write_file
from camlens.cli._png import encode_png
from camlens.cohort import FolderMaps
from camlens.errors import BadInputError
from camlens.render.cohort import cohort_grid, cohort_tiles, shared_scale
from camlens.report._read import COHORT_FILE as COHORT_JSON
from camlens.report._read import COHORT_TILES, RUN_FILE


def _groups(spec: str | None, saved: FolderMaps) -> list[str] | None:
    """Return one label per map for ``--by`` (predicted, bins:N, edges:a,b,c, csv:FILE:COLUMN)."""
    if spec is None:
        return None
    if spec == "predicted":
        if any(p is None for p in saved.predicted):
            raise BadInputError("--by predicted: some rows record no predicted class.")
        return [str(p) for p in saved.predicted]
    if spec.startswith(("bins:", "edges:")):
        if np.isnan(saved.values).any():
            raise BadInputError(f"--by {spec}: some rows record no predicted value.")
        kind, _, arg = spec.partition(":")
        try:
            if kind == "bins":
                return camlens.assign_bins(saved.values, bins=int(arg))
            return camlens.assign_bins(saved.values, edges=[float(v) for v in arg.split(",")])
        except ValueError as exc:
            if isinstance(exc, BadInputError):
                raise
            raise BadInputError(f"--by {spec}: give bins:N or edges:A,B,C with numbers.") from None
    if spec.startswith("csv:"):
        path, _, column = spec[4:].rpartition(":")
        if not path or not column:
            raise BadInputError("--by csv:FILE:COLUMN needs a file and a column name.")
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows or column not in rows[0] or "key" not in rows[0]:
            raise BadInputError(f"{path} needs a 'key' column (the image key) and {column!r}.")
        table = {row["key"]: row[column] for row in rows}
        missing = [k for k in saved.keys if k not in table]
        if missing:
            raise BadInputError(f"{path} has no row for {len(missing)} images, e.g. {missing[0]}.")
        return [table[k] for k in saved.keys]
    raise BadInputError(f"--by {spec!r}: use predicted, bins:N, edges:A,B,C or csv:FILE:COLUMN.")


def _regions(path: Path | None) -> dict[str, Any]:
    """Return named regions from a JSON ``{"name": [y0, x0, y1, x1]}`` (boxes on the map grid)."""
    if path is None:
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and len(v) == 4 for v in data.values()
    ):
        raise BadInputError(f'{path} must be JSON {{"name": [y0, x0, y1, x1], ...}}.')
    return {str(k): tuple(int(x) for x in v) for k, v in data.items()}


@click.command("cohort")
@click.argument("out_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--method", help="The method's maps to use, where the folder holds several.")
@click.option(
    "--by",
    "by",
    help="Groups: predicted, bins:N (quantiles of the predicted value), edges:A,B,C, "
    "or csv:FILE:COLUMN (a CSV with a 'key' column of image keys).",
)
@click.option(
    "--regions",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help='JSON {"name": [y0, x0, y1, x1]}: boxes on the maps\' grid (end exclusive).',
)
@click.option("--signed", is_flag=True, help="Average the signed layer maps (raw), not [0, 1].")
@click.option("--seed", default=0, show_default=True, type=int, help="Bootstrap seed.")
@click.option("--cmap", default="jet", show_default=True)
def cohort_command(
    out_dir: Path,
    method: str | None,
    by: str | None,
    regions: Path | None,
    signed: bool,
    seed: int,
    cmap: str,
) -> None:
    """Aggregate an explain folder's saved maps: cohort.json, cohort.png (one colour scale).

    Also writes each group's mean map as cohort/group-NN.png (the same scale) and, in a folder
    of `camlens explain`, rewrites its report (index.html) with a cohort section.
    """
    try:
        saved = camlens.load_folder(out_dir, method=method)
        maps = saved.raw if signed else saved.maps
        result = camlens.cohort(
            list(maps) if signed else maps,
            groups=_groups(by, saved),
            regions=_regions(regions),
            seed=seed,
        )
        image = cohort_grid(result, cmap=cmap)
        tiles = cohort_tiles(result, cmap=cmap)
    except (camlens.CamlensError, OSError, json.JSONDecodeError) as exc:
        raise click.ClickException(str(exc)) from exc
    folder = out_dir / COHORT_TILES
    folder.mkdir(exist_ok=True)
    for old in folder.glob("group-*.png"):  # a previous grouping may have had more groups
        old.unlink()
    names = [f"{COHORT_TILES}/group-{i:02d}.png" for i in range(len(tiles))]
    for name, tile in zip(names, tiles, strict=True):
        write_file(out_dir / name, encode_png(tile))
    data = {
        "method": saved.methods[0],
        "by": by,
        "signed": signed,
        "grid": {"cmap": cmap, "scale": list(shared_scale(result)), "images": names},
        **result.to_json(),
    }
    write_file(out_dir / COHORT_JSON, json.dumps(data, indent=2).encode("utf-8"))
    write_file(out_dir / COHORT_PNG, encode_png(np.asarray(image)))
    click.echo(f"cohort of {result.overall.count} maps -> {out_dir / COHORT_JSON}, {COHORT_PNG}")
    if (out_dir / RUN_FILE).is_file():
        click.echo(f"report: {camlens.report.write_report(out_dir)}")
    for g in result.groups or (result.overall,):
        shares = ", ".join(f"{r.name} {r.mass_share:.1%}" for r in g.regions)
        click.echo(
            f"  {g.label}: n={g.count}, rank corr {g.rank_correlation:.3f}"
            + (f", mass: {shares}" if shares else "")
        )
