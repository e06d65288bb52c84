"""`camlens layers`: a model's layers, the ones CAM can use, and the one camlens picks."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

import camlens
from camlens.cli import _common
from camlens.cli._options import parse_size


@click.command("layers")
@click.argument("model")
@_common.model_file_options
@click.option(
    "--size",
    callback=parse_size,
    metavar="N|HxW",
    help="Input size for the test forward pass: N or HxW (default: the model's own, else 224).",
)
def layers_command(
    model: str, factory: str | None, trust_pickle: bool, size: tuple[int, int] | None
) -> None:
    """List MODEL's layers: name, type, output shape, and which CAM can use.

    MODEL is a model file (.keras, .h5, .pt2, .onnx, .pt/.pth/.safetensors with --factory) or a
    bundled model: mobilenet_v2, mobilenet_v2_keras. Layers marked * can be explained; the one
    marked auto is what `camlens explain` uses when no --layer is given; the grid column says
    how each one lies on the image grid (nchw/nhwc HxW maps, tokens P+HxW: P prefix tokens).
    """
    loaded = _common.load(model, {"factory": factory, "trust_pickle": trust_pickle})
    try:
        rows = camlens.layers(
            loaded.model,
            input_size=size or loaded.input_size,
            channels=loaded.channels or 3,
        )
    except camlens.CamlensError as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table(title=f"{loaded.source}: {len(rows)} layers", title_justify="left")
    table.add_column("layer", no_wrap=True)
    table.add_column("type")
    table.add_column("output shape", justify="right")
    table.add_column("grid")
    table.add_column("CAM")
    for row in rows:
        shape = "-" if row.output_shape is None else _shape(row.output_shape)
        mark = "auto" if row.auto else ("*" if row.candidate else "")
        style = "bold green" if row.auto else (None if row.candidate else "dim")
        grid = row.layout if row.candidate and row.layout else ""
        table.add_row(Text(row.name), Text(row.type), shape, grid, mark, style=style)
    console = Console()
    if not console.is_terminal:  # piped: keep long names on one line
        console = Console(width=160)
    console.print(table)
    picked = next((row.name for row in rows if row.auto), None)
    console.print(
        f"{sum(row.candidate for row in rows)} layers usable for CAM (*); "
        + (f"automatic pick: {picked}" if picked else "no automatic pick: pass --layer"),
        highlight=False,
    )


def _shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
