"""Compare two `camlens explain` output folders image for image (tests of other engines)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def _name(image: str) -> str:
    """Return an image's file name, from a path or a URL."""
    return image.rstrip("/").rsplit("/", 1)[-1]


def read_run(out: Path) -> tuple[dict[tuple[str, str, int], dict], list[dict]]:
    """Return a folder's results by (image file name, method, rank) and its failures.

    Fails if a result is recorded twice.
    """
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by_row = {(_name(r["image"]), r["method"], r["rank"]): r for r in records}
    assert len(by_row) == len(records)  # no result recorded twice
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    return by_row, failures


def assert_same_runs(local: Path, other: Path, *, same_paths: bool = True) -> None:
    """Assert that ``other`` holds the results of ``local``: maps within 1e-6, same failures.

    With ``same_paths`` the images were given by the same paths (same keys and file names);
    else (one run read URLs) results are matched by image file name.
    """
    a, fa = read_run(local)
    b, fb = read_run(other)
    assert sorted(a) == sorted(b)
    assert sorted(_name(f["image"]) for f in fa) == sorted(_name(f["image"]) for f in fb)
    assert len({f["image"] for f in fb}) == len(fb)  # no failure recorded twice
    fields = ["unit", "layer", "sign", "peak", "status"]
    fields += ["image", "key", "overlay", "arrays"] if same_paths else []
    for row, ra in a.items():
        rb = b[row]
        for field in fields:
            assert ra[field] == rb[field], (row, field)
        assert rb["score"] == pytest.approx(ra["score"], rel=1e-6, abs=1e-6), row
        for name in ("image_file", "overlay", "map", "arrays"):
            assert (other / rb[name]).is_file(), (row, name)
        with np.load(local / ra["arrays"]) as xa, np.load(other / rb["arrays"]) as xb:
            np.testing.assert_allclose(xa["raw"], xb["raw"], atol=1e-6)
            np.testing.assert_allclose(xa["map"], xb["map"], atol=1e-6)
    with np.load(local / "maps.npz") as xa, np.load(other / "maps.npz") as xb:
        assert len(xa.files) == len(xb.files)
        if same_paths:
            assert sorted(xa.files) == sorted(xb.files)
    assert (other / "index.html").is_file() and (other / "run.json").is_file()
