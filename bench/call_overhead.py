"""Where camlens's fixed cost per call goes: MobileNetV2, batch 1, one thread.

Run from the repository root (either environment: the package's ``.venv`` or ``.venv-bench``)::

    python bench/call_overhead.py                 # 150 interleaved rounds
    python bench/call_overhead.py --rounds 30     # quicker

At batch 1 a small network's forward takes ~15 ms on one CPU thread, and what camlens does
besides the forward and the backward to the layer shows. This script times, in one process and
round-robin, a plain ``inference_mode`` forward; the *floor*: a forward hook, the backward from
the top-1 logit to the layer and the Grad-CAM map made in plain torch (what a minimal hand-written
Grad-CAM does, with no checks); the floor plus one of camlens's own steps at a time (the call
itself, not a re-implementation: the backend's ``prepare``, ``inference_state``, its target
``resolve``, the method and ``postprocess.finish``, the finiteness checks and the output copy);
the floor plus all of them; the floor with the same checks and outputs written by hand in plain
torch (the eval walk, the input check, the top-1 pick and its NaN check, the
min-max-normalised map at the input's size, the finiteness checks, the host copies: what
camlens's per-call work costs without its layers); and the explainers. Each row reports the
median CPU time and the median over rounds of (row - forward) and (row - floor), paired within
a round so drift cancels. Results go to stdout (Markdown) and ``bench/results/call_overhead.json``.

The worker runs with glibc's malloc thresholds fixed (as ``bench/run.py`` does, see
``bench/README.md``); ``--glibc-malloc`` leaves them adaptive. Nothing here asserts on a number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "call_overhead.json"
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**25), "MALLOC_TRIM_THRESHOLD_": str(2**27)}
STEPS = ("eval walk", "prepare", "resolve", "method + finish", "checks")


def _calls() -> dict[str, Callable[[], Any]]:
    """Build the network, the input and every timed call (imports here: after the re-exec)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    import camlens
    from camlens import postprocess, zoo
    from camlens.backends.torch._state import inference_state
    from camlens.backends.torch._targets import resolve
    from camlens.targets import TopK

    torch.manual_seed(0)
    model = zoo.mobilenet_v2(pretrained=False).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    gradcam = camlens.GradCAM(model, layer="features")
    plusplus = camlens.GradCAMPlusPlus(model, layer="features")
    backend = gradcam._backend
    method = gradcam.method
    size = (224, 224)

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    def leaf_hook(slot: list[torch.Tensor]) -> Callable[..., torch.Tensor]:
        """A forward hook making the layer's output a graph leaf, the head recording from it."""

        def hook(module: Any, args: Any, out: torch.Tensor) -> torch.Tensor:
            torch.set_grad_enabled(True)
            leaf = out.detach().requires_grad_(True)
            slot.append(leaf)
            return leaf.clone()

        return hook

    def floor_with(steps: frozenset[str]) -> Callable[[], None]:
        def call() -> None:
            inputs = backend.prepare(x) if "prepare" in steps else x
            slot: list[torch.Tensor] = []
            hook = leaf_hook(slot)

            state = inference_state(model) if "eval walk" in steps else None
            if state is not None:
                state.__enter__()
            handle = model.features.register_forward_hook(hook)
            with torch.inference_mode(False), torch.set_grad_enabled(False):
                out = model(inputs)
                if "resolve" in steps:
                    score = resolve(TopK(1), out)[0].sum()
                else:
                    score = out.gather(1, out.argmax(1)[:, None]).sum()
                (grad,) = torch.autograd.grad(score, slot)
            handle.remove()
            if state is not None:
                state.__exit__(None, None, None)
            acts = slot[0].detach()
            if "method + finish" in steps:
                maps, _, _ = postprocess.finish([method.cam(acts, grad)], size, relu=True)
            else:
                cam = F.relu((grad.mean((2, 3), keepdim=True) * acts).sum(1, keepdim=True))
                cam = F.interpolate(cam, size=size, mode="bilinear")
                maps = (cam / cam.amax())[:, 0]
            host = maps.numpy()
            if "checks" in steps:
                np.isfinite(host).all()
                out.detach().reshape(1, -1).float().cpu().numpy()

        return call

    rows = torch.from_numpy(postprocess.bilinear_matrix(224, 7)).float()
    cols = rows.T.contiguous()

    def by_hand() -> None:
        """The floor plus camlens's checks and outputs, written directly in torch."""
        if not math.isfinite(x.sum().item()):
            raise ValueError("NaN input")
        slot: list[torch.Tensor] = []
        hook = leaf_hook(slot)

        with inference_state(model):
            handle = model.features.register_forward_hook(hook)
            with torch.set_grad_enabled(False):
                out = model(x)
                index = out.argmax(1, keepdim=True)
                picked = out.gather(1, index)
                (grad,) = torch.autograd.grad(picked.sum(), slot)
            handle.remove()
        if np.isnan(picked.detach().numpy()).any():
            raise ValueError("NaN score")
        index.numpy()
        cam = (grad.mean((2, 3), keepdim=True) * slot[0].detach()).sum(1)
        big = rows @ cam.clamp(min=0)[0] @ cols
        low = big.amin()
        span = big.amax() - low
        maps = ((big - low) / torch.where(span == 0, 1.0, span)).numpy()
        if not (np.isfinite(maps).all() and np.isfinite(cam.numpy()).all()):
            raise ValueError("NaN map")
        out.detach().numpy()

    calls: dict[str, Callable[[], Any]] = {"forward": forward, "floor": floor_with(frozenset())}
    for step in STEPS:
        calls[f"floor + {step}"] = floor_with(frozenset({step}))
    calls["floor + all of them"] = floor_with(frozenset(STEPS))
    calls["the same checks by hand"] = by_hand
    calls["camlens.GradCAM"] = lambda: gradcam(x)
    calls["camlens.GradCAMPlusPlus"] = lambda: plusplus(x)
    return calls


def measure(rounds: int) -> dict[str, Any]:
    """Time every call round-robin; return per-call medians and paired differences (ms)."""
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    calls = _calls()
    for call in calls.values():  # warm-up
        for _ in range(3):
            call()
    names = list(calls)
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.process_time()
            calls[name]()
            cpu[name].append(time.process_time() - start)

    def paired(name: str, base: str) -> float:
        return 1e3 * statistics.median(a - b for a, b in zip(cpu[name], cpu[base], strict=True))

    forward = statistics.median(cpu["forward"])
    rows = {
        name: {
            "median_ms": 1e3 * statistics.median(cpu[name]),
            "x_forward": statistics.median(cpu[name]) / forward,
            "over_forward_ms": paired(name, "forward"),
            "over_floor_ms": paired(name, "floor"),
        }
        for name in names
    }
    import camlens

    return {
        "rounds": rounds,
        "fixed_malloc": all(os.environ.get(k) == v for k, v in FIXED_MALLOC.items()),
        "torch": torch.__version__,
        "camlens": camlens.__version__,
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    """Render the result as a Markdown table."""
    lines = [
        f"MobileNetV2, batch 1, 224x224, one thread, {result['rounds']} rounds, torch "
        f"{result['torch']}, fixed malloc thresholds: {result['fixed_malloc']}",
        "",
        "| call | median CPU ms | x forward | over the forward, ms | over the floor, ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in result["rows"].items():
        lines.append(
            f"| {name} | {row['median_ms']:.2f} | {row['x_forward']:.3f} | "
            f"{row['over_forward_ms']:.2f} | {row['over_floor_ms']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse the command line, re-run with fixed malloc thresholds if needed, measure, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--glibc-malloc", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    wanted = {} if args.glibc_malloc else FIXED_MALLOC
    if any(os.environ.get(k) != v for k, v in wanted.items()):
        env = {**os.environ, **wanted, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    result = measure(args.rounds)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
