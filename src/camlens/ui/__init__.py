"""The browser explorer (``camlens serve``): session logic here, the gradio app in ``_app``.

Importing this package does not import gradio; :func:`serve` does, when it is called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from camlens.io import Preprocess
from camlens.ui._session import Cancelled, Result, Session

__all__ = ["Cancelled", "Result", "Session", "serve"]


def serve(
    model: Any,
    images: Mapping[str, np.ndarray] | None = None,
    *,
    preprocess: Preprocess | None = None,
    classes: Sequence[str] | None = None,
    regression: bool = False,
    host: str = "127.0.0.1",
    port: int | None = None,
) -> None:
    """Explore a model in the browser until interrupted (needs ``pip install 'camlens[ui]'``).

    Also ``camlens.serve``; ``import camlens`` itself never imports gradio, this call does.

    >>> camlens.serve(zoo.mobilenet_v2(), classes=zoo.imagenet_classes())  # doctest: +SKIP

    Args:
        model: A ``torch.nn.Module`` or a built ``keras.Model``.
        images: Named pictures to offer, ``{name: uint8 (H, W, 3)}``; the bundled photos if
            ``None``.
        preprocess: How pictures become the model's input; ImageNet's at 224x224 by default.
        classes: Class names by output index, for the predictions and the target choices.
        regression: The model is a regressor: targets are its outputs, up or down.
        host: Address to bind; only this machine by default.
        port: Port; gradio picks a free one from 7860 if ``None``.

    Raises:
        DependencyError: gradio is not installed.
    """
    from camlens.ui._app import build_app

    if images is None:
        from camlens import zoo

        images = {photo.name: photo.image for photo in zoo.photos()}
    session = Session(
        model, images=images, preprocess=preprocess, classes=classes, regression=regression
    )
    build_app(session).launch(server_name=host, server_port=port)
