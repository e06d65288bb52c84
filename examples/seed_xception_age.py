"""Where does an age-from-retina regressor look? The hand-written Keras Grad-CAM, in one line.

The model has the usual transfer-learning shape: a nested Xception base (a ``keras.Model``
named "xception"), then global average pooling, dropout and one linear unit (the predicted
age). Hand-written Grad-CAM has to rebuild the head around ``block14_sepconv2_act`` because
the layer lives inside the nested model; camlens finds it by name. The weights here are random
(nothing is downloaded), so the map shows the mechanics, not a trained model's reasoning:
swap in your own trained model.

Run:  python examples/seed_xception_age.py --out seed-example
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# TensorFlow 2.21 can crash in conv backward passes on some CPUs unless oneDNN's custom ops are
# off; it must be set before TensorFlow is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras
import numpy as np
from PIL import Image

import camlens

HERE = Path(__file__).parent


def build_age_model(size: int = 299) -> keras.Model:
    """Build the seed-shaped regressor: Input -> Xception base -> GAP -> Dropout -> Dense(1)."""
    keras.utils.set_random_seed(0)
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(size, size, 3))
    inputs = keras.Input((size, size, 3))
    x = base(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(1, name="age")(x)
    return keras.Model(inputs, outputs, name="age_from_retina")


def main() -> None:
    """Explain the predicted age on the bundled retinal photo and save the pictures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("seed-example"))
    parser.add_argument("--size", type=int, default=299, help="input size (at least 71)")
    args = parser.parse_args()

    model = build_age_model(args.size)
    photo = Image.open(HERE / "data" / "retina.jpg").convert("RGB").resize((args.size,) * 2)
    image = np.asarray(photo)
    batch = keras.applications.xception.preprocess_input(image[None].astype("float32"))

    cam = camlens.GradCAM(model, layer="block14_sepconv2_act")
    up = cam(batch, target=camlens.Output(0))  # what pushes the predicted age up
    down = cam(batch, target=camlens.Output(0, sign=-1))  # ... and down

    args.out.mkdir(parents=True, exist_ok=True)
    up.overlay([image])[0].save(args.out / "age_up_overlay.png")
    camlens.save_grid(
        args.out / "age_grid.png",
        [image, image],
        np.concatenate([up.maps, down.maps]),
        titles=[f"age {up.scores[0]:.2f}: up", f"age {down.scores[0]:.2f}: down"],
    )
    print(f"layer {up.layers[0]}, predicted age {up.scores[0]:.3f} -> {args.out}")
    strength = up.strength  # how strong the map is, whatever its colours show
    print(
        f"map {strength.status[0]}: raw {strength.raw_min[0]:.3g} to {strength.raw_max[0]:.3g}, "
        f"contrast {strength.contrast[0]:.1%} (normalize='max' shows it as it is)"
    )


if __name__ == "__main__":
    main()
