"""Time `camlens.cohort` over 10,000 maps saved as an explain folder would save them.

Writes N ``arrays/<key>__gradcam.npz`` files (``map``: float32 at a HxW input grid, ``raw``:
the 7x7 signed layer map) and a ``results.jsonl``, then times reading them back
(:func:`camlens.load_folder`) and the cohort (quantile bins of the predicted value, two box
regions with 1000 bootstrap resamples, rank correlations). Prints the measured seconds.

Usage: python bench/cohort_speed.py [N] [SIDE]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import camlens


def main(n: int = 10_000, side: int = 64) -> None:
    """Write the folder, time reading and aggregating it, and print the figures."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "arrays").mkdir()
        lines = []
        for i in range(n):
            key = f"{i:05d}-eye"
            name = f"arrays/{key}__gradcam.npz"
            np.savez(
                root / name,
                map=rng.random((side, side), dtype=np.float32),
                raw=rng.standard_normal((7, 7)).astype(np.float32),
            )
            row = {
                "image": f"{key}.jpg",
                "key": key,
                "method": "gradcam",
                "prediction": {"unit": 0, "name": None, "value": float(rng.uniform(20, 80))},
                "arrays": name,
            }
            lines.append(json.dumps(row) + "\n")
        (root / "results.jsonl").write_text("".join(lines), encoding="utf-8")
        start = time.perf_counter()
        saved = camlens.load_folder(root)
        loaded = time.perf_counter()
        result = camlens.cohort(
            saved.maps,
            groups=camlens.assign_bins(saved.values, bins=4),
            regions={"disc": (10, 40, 30, 60), "macula": (22, 12, 42, 32)},
        )
        done = time.perf_counter()
    total = done - start
    print(f"maps: {n} x {side}x{side}, groups: {len(result.groups)}, regions: 2, n_boot: 1000")
    print(f"read: {loaded - start:.2f} s, cohort: {done - loaded:.2f} s, total: {total:.2f} s")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
