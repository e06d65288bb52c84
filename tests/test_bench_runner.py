"""The peer benchmark runner's own logic (bench/run.py), without any peer or subprocess."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import run  # bench/ is not a package: on sys.path above


def test_every_case_id_reads_back() -> None:
    cases = run.all_cases()
    assert len({c.id for c in cases}) == len(cases)
    for case in cases:
        assert run.Case.parse(case.id) == case
        assert case.camlens_twin().library == "camlens"
    libraries = {c.library for c in cases}
    assert {"camlens", "pytorch-grad-cam", "torchcam", "captum", "tf-keras-vis"} <= libraries


def _record(ratio: float) -> dict[str, object]:
    timing = {"median_s": 0.1 * ratio, "min_s": 0.1, "max_s": 0.2}
    return {
        "status": "ok",
        "call": timing,
        "forward": {"median_s": 0.1, "min_s": 0.1, "max_s": 0.1},
        "ratio_to_forward": ratio,
        "fixed_malloc": True,
        "cpu_ratio_to_forward": ratio,
        "memory": {"peak_mib": 10.0},
    }


def test_agreement_and_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "RESULTS", tmp_path)
    ours = run.Case("torch", "camlens", "gradcam", "resnet50", 1)
    peer = run.Case("torch", "torchcam", "gradcam", "resnet50", 1)
    ramp = np.arange(8, dtype=np.float32)
    maps = np.stack([np.add.outer(ramp, k * ramp) ** 2 for k in (1, 2)])  # smooth maps
    ours.maps_path.parent.mkdir(parents=True)
    np.savez(ours.maps_path, maps=maps)
    np.savez(peer.maps_path, maps=3 * maps[:, ::2, ::2] + 1)  # coarser, other range
    agree = run.agreement(peer)
    assert agree is not None and agree["note"]  # upsampled to camlens's size
    assert 0.5 < agree["min_corr"] <= 1.0
    assert run.agreement(ours) is None
    failed = run.Case("torch", "captum", "gradcam", "resnet50", 1)
    saved = {
        "cases": {
            ours.id: _record(1.0),
            peer.id: {**_record(2.0), "agreement": agree},
            failed.id: {"status": "failed", "error": "ValueError: no | pipes"},
        }
    }
    table = run.markdown(saved)
    assert "| torchcam | gradcam |" in table and "| 2.00 |" in table
    assert "failed: ValueError: no / pipes" in table


def test_call_overhead_script_runs_every_step(tmp_path: Path) -> None:
    # The script calls camlens's private steps one by one: a rename must fail here, not in a
    # benchmark session. One round, in its own process (it pins threads and malloc settings).
    import json
    import subprocess

    script = Path(__file__).resolve().parents[1] / "bench" / "call_overhead.py"
    out = tmp_path / "overhead.json"
    done = subprocess.run(
        [sys.executable, str(script), "--rounds", "1", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["fixed_malloc"] is True
    rows = result["rows"]
    assert list(rows)[:2] == ["forward", "floor"]
    assert {"camlens.GradCAM", "camlens.GradCAMPlusPlus", "floor + all of them"} <= set(rows)
    assert all(np.isfinite(row["median_ms"]) and row["median_ms"] > 0 for row in rows.values())
    assert "| floor + eval walk |" in done.stdout


def test_dff_concepts_are_matched_across_the_batch() -> None:
    rng = np.random.default_rng(0)
    ours = rng.random((3 * 4, 6, 6))  # 3 images x 4 concepts, image-major
    order = [2, 0, 3, 1]
    theirs = ours.reshape(3, 4, 6, 6)[:, order].reshape(ours.shape)
    matched, found = run.match_concepts(ours, theirs, 4)
    np.testing.assert_array_equal(matched, ours)
    assert [order[j] for j in found] == [0, 1, 2, 3]
