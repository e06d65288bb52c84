"""Grad-CAM on a ViT-Base-sized transformer against its plain forward, on one CPU thread.

Run from the repository root, in the main environment (it needs ``transformers``)::

    python bench/vit_speed.py                      # batch 1 and 16, 5 timed rounds each
    python bench/vit_speed.py --batches 1 --rounds 10
    python bench/vit_speed.py --profile            # also: where one batch-1 call's time goes

The network: ``transformers.ViTForImageClassification`` from a ViT-Base configuration (hidden
768, 12 layers, 12 heads, MLP 3072, patch 16, 224x224, 1000 classes), seeded random weights,
nothing downloaded. camlens explains its automatic layer (the last block's first norm,
``vit.layers.11.layernorm_before``: tokens ``(N, 197, 768)``, a class token and 14x14 patches).

Modes, each batch in a fresh interpreter (one thread, glibc's malloc thresholds fixed as in
``run.py``), timed interleaved round-robin after a warm-up call each:

    forward          ``model(x)`` under ``torch.inference_mode()``: the reference
    gradcam          ``camlens.GradCAM(model)(x)``, explainer built once, top-1 target
    backward_layer   frozen parameters, a forward hook making the layer's output a graph leaf,
                     ``torch.autograd.grad`` of the top-1 logits to it: the floor of Grad-CAM

Reported: median wall and CPU time, and each mode's median over the forward's (CPU time, the
headline as in ``run.py``); the Grad-CAM call's peak RSS over its first two calls. Target
(reported, never asserted): Grad-CAM <= 1.15x the forward. Output: Markdown on stdout and
``bench/results/vit_speed.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import call_peaks, host, interleave, run_json, summarise
from run import FIXED_MALLOC

RESULTS = Path(__file__).resolve().parent / "results" / "vit_speed.json"
IMAGE_SIZE = 224
BATCHES = (1, 16)
ROUNDS = 5
TARGET = 1.15
#: ViT-Base/16 at 224x224 (Dosovitskiy et al., 2021), as ``google/vit-base-patch16-224``.
VIT_BASE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "patch_size": 16,
    "image_size": IMAGE_SIZE,
    "num_labels": 1000,
}
MODES = ("forward", "gradcam", "backward_layer")


def build(batch: int) -> tuple[Any, Any]:
    """Return the seeded ViT-Base in eval mode and a seeded random batch."""
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(transformers.ViTConfig(**VIT_BASE)).eval()
    x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    return model, x


def calls(model: Any, x: Any) -> tuple[dict[str, Callable[[], Any]], str]:
    """Return each mode's call and the layer camlens picked."""
    import copy

    import torch

    import camlens

    explainer = camlens.GradCAM(model)
    layer = explainer(x[:1]).layers[0]
    reference = copy.deepcopy(model)  # hooks and frozen parameters stay off the explained model
    for p in reference.parameters():
        p.requires_grad_(False)
    slot: list[torch.Tensor] = []

    def leaf(module: Any, args: Any, out: torch.Tensor) -> torch.Tensor:
        slot.append(out.detach().requires_grad_())
        return slot[-1]

    reference.get_submodule(layer).register_forward_hook(leaf)

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    def backward_layer() -> None:
        slot.clear()
        logits = reference(x).logits
        torch.autograd.grad(logits.max(1).values.sum(), slot[0])

    return {
        "forward": forward,
        "gradcam": lambda: explainer(x).maps,
        "backward_layer": backward_layer,
    }, layer


def worker(batch: int, rounds: int) -> dict[str, Any]:
    """Build the network and the calls, measure Grad-CAM's peak memory, time every mode."""
    import torch
    import transformers

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    start = time.perf_counter()
    model, x = build(batch)
    modes, layer = calls(model, x)
    build_s = time.perf_counter() - start
    _, memory = call_peaks(modes["gradcam"])  # its first two calls: also the warm-up
    modes["forward"]()
    modes["backward_layer"]()
    times = interleave(modes, rounds)
    return {
        "batch": batch,
        "layer": layer,
        "attn_implementation": model.config._attn_implementation,
        "build_s": build_s,
        "memory": memory,
        "wall": {m: summarise(t["wall"]) for m, t in times.items()},
        "cpu": {m: summarise(t["cpu"]) for m, t in times.items()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }


def profile(top: int = 12) -> str:
    """Return torch's profiler table of one batch-1 Grad-CAM call and one plain forward."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(1)
    model, x = build(1)
    modes, _ = calls(model, x)
    for mode in MODES:
        modes[mode]()
    out = []
    for mode in ("forward", "gradcam"):
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            modes[mode]()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
        out.append(f"## {mode}\n\n```\n{table}\n```")
    return "\n\n".join(out)


def markdown(results: list[dict[str, Any]]) -> str:
    """Render one table per batch."""
    out = []
    for res in results:
        if "error" in res:
            out.append(f"\n**batch {res.get('batch')}: failed**: {res['error']}")
            continue
        fwd_wall = res["wall"]["forward"]["median_s"]
        fwd_cpu = res["cpu"]["forward"]["median_s"]
        out.append(
            f"\n**ViT-Base/16, batch {res['batch']}, layer `{res['layer']}` "
            f"(attention: {res['attn_implementation']})**\n"
        )
        out.append("| mode | median ms (min-max) | CPU ms | x forward | x forward CPU |")
        out.append("|---|---:|---:|---:|---:|")
        for mode in MODES:
            wall, cpu = res["wall"][mode], res["cpu"][mode]
            out.append(
                f"| {mode} | {1e3 * wall['median_s']:.0f} ({1e3 * wall['min_s']:.0f}-"
                f"{1e3 * wall['max_s']:.0f}) | {1e3 * cpu['median_s']:.0f} "
                f"| {wall['median_s'] / fwd_wall:.3f} | {cpu['median_s'] / fwd_cpu:.3f} |"
            )
        ratio = res["cpu"]["gradcam"]["median_s"] / fwd_cpu
        verdict = "met" if ratio <= TARGET else "MISSED"
        out.append(
            f"\nGrad-CAM peak RSS {res['memory']['peak_mib']:.0f} MiB; "
            f"Grad-CAM / forward (CPU) {ratio:.3f} (<= {TARGET}: {verdict}); "
            f"load (1 min) {res['load_1min']['start']:.2f} -> {res['load_1min']['end']:.2f}"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """Run one worker per batch in a fresh interpreter and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--profile", action="store_true", help="also profile one batch-1 call")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--worker", type=int, metavar="BATCH", help=argparse.SUPPRESS)
    parser.add_argument("--profile-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.rounds)))
        return
    if args.profile_worker:
        print(json.dumps(profile()))
        return
    env = {**os.environ, **FIXED_MALLOC, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    results = []
    for batch in args.batches:
        load = os.getloadavg()[0]
        res = run_json(
            [__file__, "--worker", str(batch), "--rounds", str(args.rounds)],
            env=env,
            error_lines=3,
        )
        res.setdefault("batch", batch)
        res["load_1min"] = {"start": load, "end": os.getloadavg()[0]}
        results.append(res)
        print(f"# batch {batch} done, load {res['load_1min']['end']:.2f}", file=sys.stderr)
    report = markdown(results)
    if args.profile:
        table = run_json([__file__, "--profile-worker"], env=env, error_lines=3)
        report += "\n\n" + (table if isinstance(table, str) else f"profile failed: {table}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps({"machine": host(), "rounds": args.rounds, "results": results}, indent=2)
    )
    print(report)


if __name__ == "__main__":
    main()
