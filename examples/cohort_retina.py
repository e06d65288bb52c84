"""Which retinal region drives an "age" regressor across a cohort? The whole cohort flow.

The bundled retinal photo is augmented into a small synthetic cohort (small shifts, brightness,
flips), and each copy gets an "age" written into the macula: a patch there brightens with age.
The regressor is built so that only its macula window feeds the output, so the answer is
known: the cohort map and the region table must point at the macula, not the optic disc.
Maps are LayerCAM (element-wise gradients: zero where the output does not look). The field of
view comes from :func:`camlens.auto_fov`. Nothing is downloaded.

Run:  python examples/cohort_retina.py --out cohort-example
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import camlens

HERE = Path(__file__).parent
SIZE = 96
MACULA = (40, 52, 60, 72)  # (y0, x0, y1, x1) on the 96x96 grid
DISC = (36, 14, 60, 38)


class AgeNet(torch.nn.Module):
    """A conv layer, then the mean of its features inside the macula window, then one unit."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
        window = torch.zeros(1, 1, SIZE, SIZE)
        y0, x0, y1, x1 = MACULA
        window[..., y0:y1, x0:x1] = 1.0
        self.register_buffer("window", window)
        self.head = torch.nn.Linear(8, 1)
        with torch.no_grad():
            self.head.weight.abs_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x) * self.window
        return self.head(f.sum(dim=(2, 3)) / self.window.sum())


def make_cohort(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return ``n`` augmented copies of the photo, (N, H, W, 3) in [0, 1], and their ages."""
    rng = np.random.default_rng(seed)
    photo = np.asarray(Image.open(HERE / "data" / "retina.jpg").convert("RGB").resize((SIZE,) * 2))
    photo = photo.astype(np.float32) / 255
    ages = rng.uniform(20, 80, size=n)
    images = []
    for age in ages:
        image = np.roll(photo, tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
        image = np.clip(image * rng.uniform(0.85, 1.15), 0, 1)
        y0, x0, y1, x1 = MACULA
        image[y0 + 4 : y1 - 4, x0 + 4 : x1 - 4] += (age - 20) / 60 * 0.5
        images.append(np.clip(image, 0, 1))
    return np.stack(images), ages


def main() -> None:
    """Explain the cohort, aggregate by age bins and save the grid and the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("cohort-example"))
    parser.add_argument("--n", type=int, default=24)
    args = parser.parse_args()

    images, ages = make_cohort(args.n)
    model = AgeNet().eval()
    batch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    cam = camlens.LayerCAM(model, layer="features")
    maps = cam(batch, target=camlens.Output(0)).maps  # (N, 96, 96) in [0, 1]
    fov = camlens.auto_fov(images[0])
    result = camlens.cohort(
        maps * fov,
        groups=camlens.assign_bins(ages, bins=3),
        regions={"macula": MACULA, "optic disc": DISC, "field of view": fov},
    )
    args.out.mkdir(parents=True, exist_ok=True)
    camlens.cohort_grid(result).save(args.out / "cohort_grid.png")
    (args.out / "cohort.json").write_text(json.dumps(result.to_json(), indent=2))
    for group in result.groups:
        table = ", ".join(
            f"{r.name} {r.mass_share:.0%} [{r.mass_ci[0]:.0%}, {r.mass_ci[1]:.0%}]"
            for r in group.regions
        )
        print(f"age {group.label}: n={group.count}, map mass: {table}")
    print(f"rank correlation across images: {result.overall.rank_correlation:.2f}")


if __name__ == "__main__":
    main()
