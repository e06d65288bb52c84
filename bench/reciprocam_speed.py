"""Recipro-CAM against Score-CAM and a plain forward pass, camlens alone, on one CPU thread.

Run from the repository root::

    python bench/reciprocam_speed.py                 # ResNet-50-sized network at layer4
    python bench/reciprocam_speed.py --network resnet18

One image, 224x224, seeded random weights (the networks of ``bench/run.py``). Times are the
best of ``--rounds`` calls after a warm-up (Score-CAM: one call, it takes minutes). Nothing
asserts on the numbers; they go to stdout.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

import camlens
from _torch_cases import build_model


def best(call: Callable[[], Any], rounds: int) -> float:
    """Return the best wall time of ``rounds`` calls, after one warm-up call."""
    call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Time a forward, Recipro-CAM and Score-CAM; print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="resnet50", choices=["resnet50", "resnet18"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, x, layer = build_model(args.network, 1)
    with torch.inference_mode():
        forward = best(lambda: model(x), args.rounds)
    recipro = camlens.ReciproCAM(model, layer=layer)
    fast = best(lambda: recipro(x), args.rounds)
    score = camlens.ScoreCAM(model, layer=layer)
    start = time.perf_counter()
    score(x)
    slow = time.perf_counter() - start
    print(f"{args.network} at {layer}, 1 image, 1 thread")
    print(f"forward      {forward * 1e3:9.1f} ms")
    print(f"Recipro-CAM  {fast * 1e3:9.1f} ms  ({fast / forward:.2f} forwards)")
    print(f"Score-CAM    {slow * 1e3:9.1f} ms  ({slow / forward:.0f} forwards)")
    print(f"Score-CAM / Recipro-CAM: {slow / fast:.0f}x")


if __name__ == "__main__":
    main()
