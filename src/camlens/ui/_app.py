"""The gradio page of ``camlens serve``: the one module that imports gradio.

All it computes comes from :class:`camlens.ui.Session`; a camlens error becomes a message in the
page (the server keeps running). Stop asks the session to cancel: the explainer's run itself
stops at its next batch of perturbed inputs and the page says so.
"""

from __future__ import annotations

import tempfile
from typing import Any

from camlens.errors import CamlensError, DependencyError
from camlens.ui._session import AUTO, Cancelled, Session

__all__ = ["COLORMAPS", "METHODS", "build_app"]

#: Methods offered; Score-CAM and Ablation-CAM show progress and can be stopped.
METHODS = (
    "gradcam",
    "gradcam++",
    "hirescam",
    "layercam",
    "xgradcam",
    "eigencam",
    "scorecam",
    "ablationcam",
)
COLORMAPS = ("jet", "viridis", "inferno", "magma", "turbo", "gray")


def build_app(session: Session) -> Any:
    """Build the explorer's gradio Blocks for one session (not launched).

    Raises:
        DependencyError: gradio is not installed.
    """
    try:
        import gradio as gr
    except ImportError as exc:
        raise DependencyError(
            "the browser explorer needs gradio: pip install 'camlens[ui]'"
        ) from exc

    def run(
        upload: str | None,
        sample: str | None,
        methods: list[str],
        layer: str,
        target: str,
        normalize: str,
        cmap: str,
        alpha: float,
        progress: Any = gr.Progress(),  # noqa: B008 - gradio's way of asking for progress
    ) -> tuple[Any, ...]:
        try:
            if upload:
                image = session.read(upload)
            elif sample in session.images:
                image = session.images[sample]
            else:
                raise CamlensError("upload a picture or pick a sample")
            results = session.explain(
                image,
                methods,
                layer=layer or AUTO,
                target=target or "top-1",
                normalize=normalize,
                cmap=cmap,
                alpha=float(alpha),
                progress=lambda done, total: progress((done, total), desc="scoring masks"),
            )
        except Cancelled as exc:
            return [], None, "", "", [], f"**Cancelled:** {exc}"
        except CamlensError as exc:
            return [], None, "", "", [], f"**Cannot explain:** {exc}"
        folder = tempfile.mkdtemp(prefix="camlens-serve-")
        files = [str(path) for result in results for path in result.save(folder)]
        overlays = [(result.overlay, result.method) for result in results]
        raw = results[0].raw
        span = float(raw.max() - raw.min()) or 1.0
        raw_picture = ((raw - raw.min()) / span * 255).astype("uint8")
        ranges = "\n\n".join(result.range_text for result in results)
        notes = "\n\n".join(note for result in results for note in result.notes)
        return (
            overlays,
            raw_picture,
            ranges,
            session.prediction(results[0].explanation),
            files,
            notes,
        )

    layers = session.layer_choices()
    with gr.Blocks(title="camlens explorer") as app:
        gr.Markdown("# camlens explorer")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Upload a picture", type="filepath", elem_id="upload")
                sample = gr.Dropdown(
                    list(session.images),
                    value=next(iter(session.images), None),
                    label="Or a sample",
                )
                methods = gr.CheckboxGroup(list(METHODS), value=["gradcam"], label="Methods")
                layer = gr.Dropdown(layers, value=AUTO, label="Layer", elem_id="layer")
                target = gr.Dropdown(
                    session.target_choices(),
                    value=session.target_choices()[0],
                    allow_custom_value=True,
                    label="Target",
                )
                normalize = gr.Radio(["minmax", "max", "none"], value="minmax", label="Normalise")
                cmap = gr.Dropdown(list(COLORMAPS), value="jet", label="Colormap")
                alpha = gr.Slider(0, 1, value=0.5, step=0.05, label="Alpha")
                with gr.Row():
                    go = gr.Button("Explain", variant="primary", elem_id="explain")
                    stop = gr.Button("Stop", elem_id="stop")
            with gr.Column(scale=2):
                error = gr.Markdown(elem_id="message")
                overlays = gr.Gallery(label="Overlays", columns=3, format="png", elem_id="overlays")
                raw = gr.Image(label="Raw map (first method)", format="png", elem_id="raw")
                ranges = gr.Markdown(elem_id="ranges")
                prediction = gr.Textbox(label="Prediction", lines=5, elem_id="prediction")
                files = gr.File(label="Downloads (overlay PNG, map .npy)", file_count="multiple")
        go.click(
            run,
            [upload, sample, methods, layer, target, normalize, cmap, alpha],
            [overlays, raw, ranges, prediction, files, error],
            api_name="explain",
        )
        # Not gradio's own `cancels`: that drops the event but leaves the explainer running in
        # its worker thread. The session stops the run itself; `run` then shows "Cancelled".
        stop.click(session.cancel, None, None, queue=False)
    return app
