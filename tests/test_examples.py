"""The examples stay runnable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def _run_example(script: str, *args: str) -> str:
    """Run ``examples/<script>`` with ``args``; assert it succeeds and return its stdout."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_seed_example_runs(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    out = _run_example("seed_xception_age.py", "--size", "71", "--out", str(tmp_path))
    assert "layer xception/block14_sepconv2_act" in out
    assert (tmp_path / "age_up_overlay.png").stat().st_size > 0
    assert (tmp_path / "age_grid.png").stat().st_size > 0


def test_onnx_example_runs(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    lines = _run_example("onnx_model.py", "--out", str(tmp_path)).splitlines()
    assert lines[0] == "ONNX model mobilenet_v2.onnx NCHW (224, 224)"
    for method in ("ablationcam", "scorecam", "eigencam"):
        line = next(line for line in lines if line.startswith(method + ":"))
        assert float(line.rsplit(" ", 1)[1]) < 1e-4  # the ONNX maps are the torch model's
        assert (tmp_path / f"chelsea_{method}.png").stat().st_size > 0
    assert any(line.startswith("gradcam: gradcam needs gradients") for line in lines)


def test_cohort_example_finds_the_macula(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    _run_example("cohort_retina.py", "--out", str(tmp_path))
    assert (tmp_path / "cohort_grid.png").stat().st_size > 0
    import json

    data = json.loads((tmp_path / "cohort.json").read_text())
    for group in data["groups"]:
        shares = {r["name"]: r["mass_share"] for r in group["regions"]}
        # The model reads only the macula window: the map mass must sit there.
        assert shares["macula"] > 0.9 > shares["optic disc"]
