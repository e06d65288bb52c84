"""The browser explorer (``camlens serve``): session logic here, the gradio app in ``_app``.

Importing this package does not import gradio; :func:`serve` does, when it is called.
"""

from __future__ import annotations

from typing import Any

from camlens.ui._session import Result, Session

__all__ = ["Result", "Session", "serve"]


def serve(
    model: Any,
    images: Any = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    **session_options: Any,
) -> None:
    """Open a model in the browser explorer (needs ``pip install 'camlens[ui]'``).

    Args:
        model: A ``torch.nn.Module`` or a built ``keras.Model``.
        images: Named pictures to offer, ``{name: uint8 (H, W, 3)}``; the bundled photos if
            ``None``.
        host: Address to bind; only this machine by default.
        port: Port; gradio picks a free one if ``None``.
        **session_options: ``preprocess``, ``classes``, ``regression`` for :class:`Session`.

    Raises:
        DependencyError: gradio is not installed.
    """
    from camlens.ui._app import build_app

    if images is None:
        from camlens import zoo

        images = {photo.name: photo.image for photo in zoo.photos()}
    session = Session(model, images=images, **session_options)
    build_app(session).launch(server_name=host, server_port=port)
