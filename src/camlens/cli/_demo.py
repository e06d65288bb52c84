"""`camlens demo`: the bundled model on the bundled photos."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import click
import numpy as np

import camlens

DEMO_METHODS = ("gradcam", "gradcam++", "layercam", "eigencam")


@click.command("demo")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("camlens-demo"),
    show_default=True,
    help="Folder for the pictures and the summary.",
)
@click.option(
    "--method",
    "method_names",
    multiple=True,
    default=DEMO_METHODS,
    show_default=True,
    help="CAM method (repeat for several); see `camlens methods`.",
)
@click.option("--cmap", default="jet", show_default=True, help="Matplotlib colormap name.")
@click.option("--alpha", default=0.5, show_default=True, help="Heatmap weight in the overlay.")
def demo_command(out_dir: Path, method_names: tuple[str, ...], cmap: str, alpha: float) -> None:
    """Explain the bundled ImageNet MobileNetV2 on the bundled photos.

    Writes, for each photo, a picture with one row per method (image | heatmap | overlay) and
    a summary.csv with the top-1 class, its probability and where each map peaks.
    """
    from camlens import zoo

    try:
        model = zoo.mobilenet_v2()
    except camlens.CamlensError as exc:
        raise click.ClickException(str(exc)) from exc
    classes = zoo.imagenet_classes()
    photos = zoo.photos()
    images = np.stack([p.image for p in photos])
    batch = zoo.imagenet_preprocess(images)
    probs = zoo.probabilities(model, batch)
    out_dir.mkdir(parents=True, exist_ok=True)

    explanations = {}
    for name in method_names:
        try:
            explainer = camlens.Explainer(model, method=name)
        except camlens.CamlensError as exc:
            raise click.BadParameter(str(exc), param_hint="--method") from exc
        start = time.perf_counter()
        explanations[name] = explainer(batch)
        click.echo(f"{name:<20} {time.perf_counter() - start:6.2f} s for {len(photos)} photos")

    rows = []
    for i, photo in enumerate(photos):
        top = int(np.argmax(probs[i]))
        label = f"{classes[top]} ({probs[i, top]:.2f})"
        maps = np.stack([exp.maps[i] for exp in explanations.values()])
        titles = [f"{name}: {label}" for name in explanations]
        path = out_dir / f"{photo.name}.png"
        camlens.save_grid(
            path, [photo.image] * len(maps), maps, titles=titles, cmap=cmap, alpha=alpha
        )
        click.echo(f"{photo.name:<14} {label:<34} -> {path}")
        for name, exp in explanations.items():
            peak_y, peak_x = np.unravel_index(int(np.argmax(exp.maps[i])), exp.maps[i].shape)
            rows.append(
                {
                    "photo": photo.name,
                    "class_index": top,
                    "class": classes[top],
                    "probability": f"{probs[i, top]:.4f}",
                    "logit": f"{exp.scores[i]:.4f}",
                    "method": name,
                    "layer": ",".join(exp.layers),
                    "peak_y": int(peak_y),
                    "peak_x": int(peak_x),
                    "credit": photo.credit,
                }
            )
    with (out_dir / "summary.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    click.echo(f"wrote {len(photos)} pictures and summary.csv to {out_dir}")
