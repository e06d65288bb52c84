"""Explain an ONNX model without converting it back to a framework.

Exports the bundled MobileNetV2 (ImageNet weights where the weights package is installed,
random ones otherwise) with ``torch.onnx.export``, loads the ``.onnx`` file with
``camlens.io.load_model``, explains two bundled photos with the gradient-free methods that run
on ONNX, checks the maps against the PyTorch model's, and writes the overlays::

    python examples/onnx_model.py --out onnx-demo

The command line does the same on the file: ``camlens explain onnx-demo/mobilenet_v2.onnx
photo.jpg --out report`` (Ablation-CAM unless ``-m`` says otherwise).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch

import camlens
from camlens import zoo
from camlens.io import load_model


def main() -> None:
    """Export, load, explain, compare, write."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("onnx-demo"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        net = zoo.mobilenet_v2()
    except zoo.WeightsNotFoundError:
        net = zoo.mobilenet_v2(pretrained=False)
    photos = zoo.photos()[:2]
    x = zoo.imagenet_preprocess(np.stack([p.image for p in photos]))  # (2, 3, 224, 224)

    path = args.out / "mobilenet_v2.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter
        torch.onnx.export(
            net.eval(),
            (torch.from_numpy(x[:1]),),
            str(path),
            dynamo=False,  # the default (dynamo) exporter needs the onnxscript package
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )

    loaded = load_model(path)  # device="cuda" with onnxruntime-gpu
    print(loaded.source, loaded.layout, loaded.input_size)
    for method in ("ablationcam", "scorecam", "eigencam"):
        exp = camlens.explain(loaded.model, x, method=method)
        ref = camlens.explain(net, torch.from_numpy(x), method=method, layer="features")
        gap = float(np.abs(exp.maps - ref.maps).max())
        print(
            f"{method}: layer {exp.layers[0]}, classes {exp.units.tolist()}, "
            f"max |ONNX - torch| {gap:.1e}"
        )
        for photo, image in zip(photos, exp.overlay([p.image for p in photos]), strict=True):
            image.save(args.out / f"{photo.name}_{method}.png")
    try:
        camlens.explain(loaded.model, x, method="gradcam")
    except camlens.errors.MethodError as exc:
        print(f"gradcam: {exc}")


if __name__ == "__main__":
    main()
