"""Pieces every benchmark script shares: peak-memory readings and sample summaries."""

from __future__ import annotations

from typing import Any

import numpy as np


def status_kib(key: str) -> int:
    """Return a ``/proc/self/status`` size field in KiB (``VmRSS``, ``VmHWM``, ...)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def reset_peak() -> bool:
    """Reset the peak-RSS mark (Linux >= 4.0: ``5 > /proc/self/clear_refs``); True if done."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def summarise(samples: list[float]) -> dict[str, Any]:
    """Return median, min, max and quartiles of ``samples`` (seconds)."""
    arr = np.asarray(samples)
    q1, q3 = np.percentile(arr, [25, 75])
    return {
        "samples_s": samples,
        "median_s": float(np.median(arr)),
        "min_s": float(arr.min()),
        "max_s": float(arr.max()),
        "q1_s": float(q1),
        "q3_s": float(q3),
    }
