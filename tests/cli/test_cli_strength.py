"""`camlens explain --normalize`: recorded, and weak maps summed up in one line, not warnings."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from commands import camlens_command

torch = pytest.importorskip("torch")


class NearFlat(torch.nn.Module):
    """A 1x1 conv giving 0.5 + a thousandth of the input, GAP, a sum: a near-flat Grad-CAM."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.features.weight.fill_(0.001 / 3)
            self.features.bias.fill_(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    x = torch.zeros(2, 3, 16, 16)
    program = torch.export.export(
        NearFlat().eval(), (x,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
    )
    model = tmp_path / "near_flat.pt2"
    torch.export.save(program, model)
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(images / name)
    return model, images


def _explain(model: Path, images: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*camlens_command(), "explain", str(model), str(images), "--out", str(out), "--size",
         "16", "--layer", "features", *extra],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def test_weak_maps_are_one_line_and_columns_in_the_tables(tmp_path: Path) -> None:
    model, images = _setup(tmp_path)
    out = tmp_path / "out"
    result = _explain(model, images, out)
    assert result.returncode == 0, result.stderr
    text = result.stdout + result.stderr
    expected = (
        "weak maps: 2 near-flat of 2: see the status and contrast columns of results.csv; "
        "--normalize max shows their strength"
    )
    assert expected in " ".join(text.split()), text
    assert "MapStrengthWarning" not in text and "warnings.warn" not in text
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert [r["status"] for r in rows] == ["flat", "flat"]
    assert all(0 < float(r["contrast"]) < 0.05 for r in rows)
    assert all(0 < float(r["raw_min"]) < float(r["raw_max"]) for r in rows)
    assert json.loads((out / "run.json").read_text())["normalize"] == "minmax"
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.count("near-flat map</span>") == 2 and "contrast " in page


def test_normalize_max_writes_the_honest_map_and_resumes_old_folders(tmp_path: Path) -> None:
    model, images = _setup(tmp_path)
    out = tmp_path / "out"
    result = _explain(model, images, out, "--normalize", "max")
    assert result.returncode == 0, result.stderr
    assert "--normalize max shows" not in result.stdout + result.stderr
    with np.load(out / "maps.npz") as arrays:
        maps = [arrays[k] for k in arrays.files if k.endswith("/map")]
    assert len(maps) == 2 and all(m.astype(np.float32).min() > 0.98 for m in maps)
    run = json.loads((out / "run.json").read_text())
    assert (
        run["normalize"] == "max" and "divided by the maximum" in (out / "index.html").read_text()
    )
    # A folder from before --normalize existed resumes as the min-max run it was.
    first = _explain(model, images, tmp_path / "old")
    assert first.returncode == 0, first.stderr
    old_run = json.loads((tmp_path / "old" / "run.json").read_text())
    del old_run["normalize"]
    (tmp_path / "old" / "run.json").write_text(json.dumps(old_run))
    resumed = _explain(model, images, tmp_path / "old", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "2 already done" in resumed.stdout
    refused = _explain(model, images, tmp_path / "old", "--resume", "--normalize", "max")
    assert refused.returncode != 0 and "normalize: 'minmax' -> 'max'" in refused.stderr
