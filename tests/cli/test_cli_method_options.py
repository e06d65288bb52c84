"""`camlens explain/compare -o METHOD.KEY=VALUE`, `--aug-smooth`, `--eigen-smooth`: the maps the
API gives for the same method options, recorded in run.json, refused in words when wrong."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import camlens
import camlens.metrics
from camlens.methods import FinerCAM, LayerCAM
from commands import camlens_command

torch = pytest.importorskip("torch")


class TwoConvs(torch.nn.Module):
    """Conv, ReLU, conv, GAP, linear: seeded, with input-driven logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 6, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(6, 8, 3, padding=1),
        )
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[TwoConvs, Path, Path, np.ndarray]:
    tmp = tmp_path_factory.mktemp("options")
    model = TwoConvs().eval()
    program = torch.export.export(
        model, (torch.zeros(2, 3, 16, 16),), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
    )
    path = tmp / "two_convs.pt2"
    torch.export.save(program, path)
    images = tmp / "in"
    images.mkdir()
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (2, 16, 16, 3), np.uint8)
    for name, picture in zip(("a.png", "b.png"), pixels, strict=True):
        Image.fromarray(picture).save(images / name)
    return model, path, images, pixels


def _run(
    command: str, model: Path, images: Path, out: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*camlens_command(), command, str(model), str(images), "--out", str(out),
         "--preset", "none", "--layer", "features", *extra],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def _saved_maps(out: Path, method: str) -> np.ndarray:
    """Return the saved maps of ``method``, images in name order (a.png, b.png)."""
    with np.load(out / "maps.npz") as arrays:
        names = sorted(k for k in arrays.files if k.endswith(f"__{method}/map"))
        return np.stack([arrays[k].astype(np.float64) for k in names])


def test_method_options_and_smoothing_give_the_apis_maps(setup: tuple, tmp_path: Path) -> None:
    model, path, images, pixels = setup
    out = tmp_path / "out"
    result = _run(
        "explain", path, images, out, "-m", "finercam", "-m", "layercam",
        "-o", "finercam.references=2", "-o", "finercam.weighting=mean", "-o",
        "finercam.gamma=0.6", "--aug-smooth",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    x = torch.from_numpy(pixels.astype(np.float32)).permute(0, 3, 1, 2)
    for name, method in (
        ("finercam", FinerCAM(references=2, weighting="mean", gamma=0.6)),
        ("layercam", LayerCAM()),
    ):
        expected = camlens.Explainer(model, "features", method=method, aug_smooth=True)(x).maps
        # The saved maps are 8-bit or float16 pictures of the map: their own precision.
        np.testing.assert_allclose(_saved_maps(out, name), expected, atol=4e-3)
        plain = camlens.Explainer(model, "features", method=name)(x).maps
        assert np.abs(plain - expected).max() > 0.05  # the options changed the map
    run = json.loads((out / "run.json").read_text())
    assert run["method_options"] == {
        "finercam": {"references": 2, "weighting": "mean", "gamma": 0.6}
    }
    assert run["aug_smooth"] is True and run["eigen_smooth"] is False
    # Resuming with other options would mix two settings in one table: refused.
    again = _run("explain", path, images, out, "-m", "finercam", "-m", "layercam", "--resume")
    assert again.returncode != 0 and "method_options" in again.stderr


def test_eigen_smooth_in_compare(setup: tuple, tmp_path: Path) -> None:
    model, path, images, pixels = setup
    out = tmp_path / "cmp"
    result = _run(
        "compare", path, images, out, "-m", "gradcam", "--eigen-smooth", "--metric", "deletion",
        "--steps", "4",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["eigen_smooth"] is True and run["method_options"] == {}
    x = torch.from_numpy(pixels.astype(np.float32)).permute(0, 3, 1, 2)
    exp = camlens.Explainer(model, "features", method="gradcam", eigen_smooth=True)(x)
    auc = camlens.metrics.deletion(model, x, exp, steps=4).auc.mean()
    table = json.loads((out / "compare.json").read_text())
    row = dict(zip(table["columns"], table["rows"][0], strict=True))
    assert row["deletion_auc"] == pytest.approx(float(auc), abs=1e-6)


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("finercam.alpha", "METHOD.KEY=VALUE"),
        ("scorecam.batch_size=8", "not among the methods asked for"),
        ("finercam.colour=red", "does not take the option"),
    ],
)
def test_bad_method_options_are_refused_in_words(
    setup: tuple, tmp_path: Path, option: str, words: str
) -> None:
    _, path, images, _ = setup
    result = _run("explain", path, images, tmp_path / "o", "-m", "finercam", "-o", option)
    assert result.returncode == 2 and words in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
