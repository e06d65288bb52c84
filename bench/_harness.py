"""Pieces every benchmark script shares: peak-memory readings and sample summaries."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
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


def run_json(args: list[str], *, env: dict[str, str] | None = None, error_lines: int = 1) -> Any:
    """Run ``python *args`` in a fresh interpreter; return the JSON on its last output line.

    A failed run gives ``{"error": <the last error_lines lines of its stderr>}``.
    """
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, check=False, env=env
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-error_lines:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def host() -> dict[str, Any]:
    """Describe the machine: CPU model, core counts, Python and platform."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
