"""Pieces the benchmark scripts share: peak memory, timing, summaries, map agreement."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Built:
    """A benchmark case ready to time: its call, the in-process forward, how it was called."""

    call: Callable[[], Any]
    forward: Callable[[], Any]
    how: str
    info: dict[str, Any] = field(default_factory=dict)


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


def run_json(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    error_lines: int = 1,
    timeout: float | None = None,
) -> Any:
    """Run ``python *args`` in a fresh interpreter; return the JSON on its last output line.

    A failed run gives ``{"error": <the last error_lines lines of its stderr>}``; one that runs
    past ``timeout`` seconds gives ``{"error": ["timed out after ... s"]}``.
    """
    try:
        proc = subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            check=False,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": [f"timed out after {timeout:.0f} s"]}
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


def timed(call: Callable[[], object]) -> float:
    """Return the wall time of one call in seconds."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def interleave(
    calls: dict[str, Callable[[], object]], rounds: int
) -> dict[str, dict[str, list[float]]]:
    """Time every call once per round, round-robin, each round starting one call later.

    Returns, per call, ``{"wall": [...], "cpu": [...]}`` in seconds: wall time, and the CPU
    time of this process (all its threads, ``time.process_time``), which other processes on
    the machine disturb far less than wall time.
    """
    names = list(calls)
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            cpu = time.process_time()
            wall = time.perf_counter()
            calls[name]()
            times[name]["wall"].append(time.perf_counter() - wall)
            times[name]["cpu"].append(time.process_time() - cpu)
    return times


def call_peaks(call: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """Make a first and a second call of ``call``; return the second's result and peak RSS.

    ``peak_mib``: the peak RSS over both calls minus the RSS before the first (set-up done);
    ``call_peak_mib``: the second call's peak minus the RSS just before it. Read from
    ``VmHWM`` after resetting it; ``peak_reset`` False means the figures are upper bounds.
    """
    baseline = status_kib("VmRSS")
    reset = reset_peak()
    first_s = timed(call)
    before = status_kib("VmRSS")
    first_peak = status_kib("VmHWM")
    reset_peak()
    result = call()
    call_peak = status_kib("VmHWM")
    return result, {
        "peak_mib": (max(first_peak, call_peak) - baseline) / 1024,
        "call_peak_mib": (call_peak - before) / 1024,
        "first_call_s": first_s,
        "peak_reset": reset,
    }


def minmax(maps: np.ndarray) -> np.ndarray:
    """Min-max normalise each map of ``(N, ...)`` (constant maps become zeros), in float64."""
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    low = flat.min(1, keepdims=True)
    span = flat.max(1, keepdims=True) - low
    out = np.where(span > 0, (flat - low) / np.where(span > 0, span, 1.0), 0.0)
    return out.reshape(maps.shape)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays (NaN if either is constant)."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
