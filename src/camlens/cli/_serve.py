"""`camlens serve`: a model in the browser explorer (gradio, from the `ui` extra)."""

from __future__ import annotations

from typing import Any

import click

from camlens.cli import _common
from camlens.io import find_images, read_image


@click.command("serve")
@click.argument("model_source", metavar="MODEL")
@click.argument("images", nargs=-1)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, help="Port (default: a free one from 7860).")
@click.option("--regression", is_flag=True, help="The model is a regressor: explain outputs.")
@_common.model_options
@_common.preprocess_options
def serve_command(
    model_source: str,
    images: tuple[str, ...],
    host: str,
    port: int | None,
    regression: bool,
    **options: Any,
) -> None:
    """Explore MODEL in the browser: methods side by side, layers, targets, overlays.

    MODEL is what `camlens explain` takes (a model file or mobilenet_v2, mobilenet_v2_keras);
    IMAGES (files or folders) are offered as samples, the bundled photos when none are given.
    Needs `pip install 'camlens[ui]'`. Binds to 127.0.0.1 unless --host says otherwise.
    """
    loaded = _common.load(model_source, options)
    preprocess = _common.preprocessing(loaded, options)
    found = find_images(images) if images else None
    samples = None
    if found is not None:
        _common.warn_missing(found)
        samples = {path.name: read_image(path) for path in found.images}
    from camlens.errors import CamlensError
    from camlens.ui import serve

    try:
        serve(
            loaded.model,
            samples,
            host=host,
            port=port,
            preprocess=preprocess,
            classes=loaded.classes,
            regression=regression,
        )
    except CamlensError as exc:
        raise click.ClickException(str(exc)) from exc
