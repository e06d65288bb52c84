"""Compare every camlens method on the bundled MobileNetV2 and photos; write docs/comparison.md.

Run:  python scripts/compare_methods.py            (about 10-20 minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

import camlens
from camlens import metrics, zoo

ROOT = Path(__file__).resolve().parent.parent
# Slow methods run in their faster form; the table says so.
METHODS: list[tuple[str, camlens.methods.Method]] = [
    ("gradcam", camlens.methods.GradCAM()),
    ("gradcam++", camlens.methods.GradCAMPlusPlus()),
    ("xgradcam", camlens.methods.XGradCAM()),
    ("hirescam", camlens.methods.HiResCAM()),
    ("gradcam-elementwise", camlens.methods.GradCAMElementWise()),
    ("layercam", camlens.methods.LayerCAM()),
    ("eigencam", camlens.methods.EigenCAM()),
    ("eigengradcam", camlens.methods.EigenGradCAM()),
    ("cam", camlens.methods.CAM()),
    ("fem", camlens.methods.FEM()),
    ("kpcacam", camlens.methods.KPCACAM()),
    ("finercam", camlens.methods.FinerCAM()),
    ("smoothgradcam++", camlens.methods.SmoothGradCAMPlusPlus()),
    ("reciprocam", camlens.methods.ReciproCAM()),
    ("ablationcam", camlens.methods.AblationCAM()),
    ("scorecam", camlens.methods.ScoreCAM()),
    ("sscam (top 64 channels, 8 samples)", camlens.methods.SSCAM(top_n=64, n_samples=8)),
    ("iscam (top 64 channels, 5 steps)", camlens.methods.ISCAM(top_n=64, n_steps=5)),
]


def main() -> None:
    """Explain the five photos with each method and score the maps; write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "comparison.md")
    parser.add_argument("--quick", action="store_true", help="three methods, few steps")
    args = parser.parse_args()

    model = zoo.mobilenet_v2()
    photos = zoo.photos()
    x = zoo.imagenet_preprocess(np.stack([p.image for p in photos]))
    boxes_by_name = json.loads((ROOT / "tests" / "data" / "boxes.json").read_text())
    boxes = [boxes_by_name[p.name] for p in photos]
    methods = METHODS[:3] if args.quick else METHODS
    steps = 5 if args.quick else 20
    percentiles = [20, 50, 80]

    rows = []
    drops = []
    for label, method in methods:
        start = time.perf_counter()
        exp = camlens.explain(model, x, method=method, layer="features")
        seconds = time.perf_counter() - start
        conf = metrics.confidence(model, x, exp)
        drops.append(conf.drop)
        pointing = metrics.pointing_game(exp, boxes)
        rows.append(
            {
                "method": label,
                "deletion AUC (lower better)": float(
                    metrics.deletion(model, x, exp, steps=steps).auc.mean()
                ),
                "insertion AUC (higher better)": float(
                    metrics.insertion(model, x, exp, steps=steps).auc.mean()
                ),
                "average drop % (lower better)": conf.average_drop,
                "increase in confidence %": conf.increase_in_confidence,
                "ROAD combined (higher better)": float(
                    metrics.road(model, x, exp, percentiles=percentiles).combined.mean()
                ),
                "pointing game": pointing.accuracy,
                "energy in box": pointing.mean_energy,
                "explain s (5 photos)": seconds,
            }
        )
        print(f"{label}: {seconds:.1f} s", flush=True)
    best = np.stack(drops).argmin(axis=0)
    for i, row in enumerate(rows):
        row["win %"] = float(100 * (best == i).mean())
    table = metrics.Table(columns=tuple(rows[0]), rows=tuple(rows))
    text = f"""# Method comparison on the bundled MobileNetV2

Every method explains the bundled ImageNet MobileNetV2 (layer `features`, the last feature map,
each photo's top-1 class) on the five bundled photos, and every map is scored with camlens's
metrics. Reproduce with:

```sh
python scripts/compare_methods.py
```

Settings: deletion with a zero baseline and insertion from a blurred copy, {steps} steps each,
class probabilities as scores; Average Drop and Increase in Confidence on the image multiplied
by its map; Win% = share of photos where the method has the lowest drop; ROAD at
{percentiles} % removal with noisy linear imputation; pointing game against the hand-drawn
boxes of `tests/data/boxes.json`. SS-CAM and IS-CAM run on the 64 channels of highest
variance (Faster-Score-CAM) with fewer samples than their papers, to keep the run short.
Five photos are too few to rank methods with confidence: read the table as a smoke test of
the metrics on real data, not as a benchmark of the methods. Identical rows are expected: at
this layer the network is global average pooling then a linear layer, so every channel's
gradient is constant over the map and Grad-CAM, XGrad-CAM, HiResCAM and CAM give the same map
up to scale; so do LayerCAM and Grad-CAM element-wise, the activations being non-negative
(ReLU6); and Smooth Grad-CAM++ is Grad-CAM++, the gradient there not depending on the input
(noise changes nothing). Finer-CAM runs with its defaults (the 3 nearest classes). Explain
times were measured while other jobs shared the machine.

Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, camlens
{camlens.__version__}.

{table.to_markdown()}"""
    args.out.write_text(text)
    print(table.to_markdown())


if __name__ == "__main__":
    main()
