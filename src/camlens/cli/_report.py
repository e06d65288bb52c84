"""`camlens report OUT_DIR`: rewrite a folder's HTML report from the files it holds."""

from __future__ import annotations

from pathlib import Path

import click

import camlens
import camlens.report


@click.command("report")
@click.argument("out_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--title", help='The page\'s title ("camlens report" by default).')
def report_command(out_dir: Path, title: str | None) -> None:
    """Rewrite OUT_DIR/index.html: the run, its images and maps, and any cohort and comparison.

    `camlens explain`, `camlens compare` and `camlens cohort` rewrite it themselves; this
    command does so at any other time (a run still in progress, a folder copied from a cluster).
    """
    try:
        written = camlens.report.write_report(out_dir, title=title)
    except (camlens.CamlensError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"report: {written}")
