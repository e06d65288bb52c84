"""`camlens demo`: the bundled model on the bundled photos, into a report."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import click

from camlens.cli import _common
from camlens.cli._explain import explain_command

DEMO_METHODS = ("gradcam", "gradcam++", "layercam", "eigencam")


@click.command("demo")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("camlens-demo"),
    show_default=True,
    help="Output folder (its earlier demo results are replaced).",
)
@click.option(
    "--method",
    "method_names",
    multiple=True,
    default=DEMO_METHODS,
    show_default=True,
    help="CAM method (repeat for several); see `camlens methods`.",
)
@_common.overlay_options
@click.pass_context
def demo_command(
    ctx: click.Context, out_dir: Path, method_names: tuple[str, ...], cmap: str, alpha: float
) -> None:
    """Explain the bundled ImageNet MobileNetV2 on the five bundled photos.

    The same as `camlens explain mobilenet_v2 PHOTOS --out DIR --overwrite` with these methods:
    overlays, maps, results.csv and an HTML report (DIR/index.html). Nothing is downloaded.
    """
    from camlens import zoo

    names = [photo.name for photo in zoo.photos()]
    with resources.as_file(resources.files(zoo).joinpath("data")) as data:
        ctx.invoke(
            explain_command,
            model_source="mobilenet_v2",
            images=tuple(str(data / f"{name}.jpg") for name in names),
            out_dir=out_dir,
            methods=method_names,
            cmap=cmap,
            alpha=alpha,
            overwrite=True,
        )
