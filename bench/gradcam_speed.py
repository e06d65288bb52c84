"""How much a camlens Grad-CAM costs next to a plain forward pass: time and peak memory.

Run from the repository root::

    python bench/gradcam_speed.py            # full: 2 warm-up + 9 timed rounds, batch 1 and 16
    python bench/gradcam_speed.py --quick    # smoke run: batch 1, 1 warm-up + 3 rounds

Networks: a ResNet-50-sized network defined here (torchvision layout, seeded random init) and
camlens's bundled MobileNetV2 (random init), both at 224x224. Modes, per (network, batch):

    forward        (a) plain forward under ``torch.inference_mode()``: the reference
    gradcam        (b) ``camlens.GradCAM(model, layer)(x)``, explainer built once, top-1 target
    explain        (c) ``camlens.explain(model, x, layer=layer)``, one-shot
    top5           (d) the explainer of (b) with ``target=camlens.TopK(5)``: 5 maps per image
    full_backward  (e) forward + backward to the input with parameters requiring grad
    hand_layer     (f) by hand: one hook, backward to the layer only, Grad-CAM maths in torch

Timing runs all modes of one (network, batch) in one process, round-robin (each round starts at
the next mode, so drift and ordering hit every mode alike). Peak memory runs each (network,
batch, mode) in a fresh subprocess. Results go to stdout (Markdown) and to
``bench/results/gradcam_speed.json``. Nothing here asserts on the numbers.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import camlens
from _harness import host, reset_peak, run_json, status_kib, summarise
from camlens import zoo

RESULTS = Path(__file__).resolve().parent / "results" / "gradcam_speed.json"
IMAGE_SIZE = 224
NETWORKS = {"resnet50": "layer4", "mobilenet_v2": "features"}
MODES = ("forward", "gradcam", "explain", "top5", "full_backward", "hand_layer")
LABELS = {
    "forward": "(a) forward, inference_mode",
    "gradcam": "(b) GradCAM explainer, top-1",
    "explain": "(c) camlens.explain, one-shot",
    "top5": "(d) GradCAM explainer, TopK(5)",
    "full_backward": "(e) forward + full backward to input",
    "hand_layer": "(f) by hand: backward to layer + CAM",
}
TARGET_GRADCAM_RATIO = 1.15
TARGET_TOP5_RATIO = 2.0

Call = Callable[[], object]


# --------------------------------------------------------------------------------------------
# The ResNet-50-sized network (torchvision layout, so layer names match: layer4, fc, ...)
# --------------------------------------------------------------------------------------------


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride here, as torchvision's v1.5) -> 1x1 expand (x4), plus skip."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        """Build the block; a projection skip when the shape changes."""
        super().__init__()
        width = planes
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        y += identity
        out: torch.Tensor = self.relu(y)
        return out


class ResNet50(nn.Module):
    """ResNet-50: stem, bottleneck stages [3, 4, 6, 3] (widths 256..2048), GAP, fc(1000)."""

    def __init__(self, num_classes: int = 1000) -> None:
        """Build the network with torchvision's default initialisation."""
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        stages = []
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            layers = [Bottleneck(inplanes, planes, stride)]
            inplanes = planes * Bottleneck.expansion
            layers += [Bottleneck(inplanes, planes) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a (N, 3, H, W) batch to (N, 1000) logits."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        out: torch.Tensor = self.fc(torch.flatten(self.avgpool(x), 1))
        return out


def build(network: str, batch: int) -> tuple[nn.Module, torch.Tensor]:
    """Return the seeded network (eval mode) and a seeded random input batch."""
    torch.manual_seed(0)
    if network == "resnet50":
        model: nn.Module = ResNet50()
    elif network == "mobilenet_v2":
        model = zoo.mobilenet_v2(pretrained=False)
    else:
        raise ValueError(f"unknown network {network!r}; choose from {sorted(NETWORKS)}")
    model.eval()
    x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    return model, x


# --------------------------------------------------------------------------------------------
# The modes: each prepares untimed state and returns the call to time
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One (network, batch): the model, its input, its layer and a camlens explainer."""

    network: str
    batch: int
    model: nn.Module
    x: torch.Tensor
    layer: str
    explainer: camlens.GradCAM
    cleanup: list[Callable[[], None]] = field(default_factory=list)


def make_case(network: str, batch: int) -> Case:
    """Build the model, the input and the explainer (once: part of setup, not timed)."""
    model, x = build(network, batch)
    layer = NETWORKS[network]
    return Case(network, batch, model, x, layer, camlens.GradCAM(model, layer=layer))


def _set_requires_grad(model: nn.Module, flag: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(flag)


def prepare(case: Case, mode: str) -> Call:
    """Do the untimed set-up of ``mode`` and return the zero-argument call to time."""
    model, x = case.model, case.x
    if mode == "forward":

        def forward() -> object:
            with torch.inference_mode():
                return model(x)

        return forward
    if mode == "gradcam":
        return lambda: case.explainer(x)
    if mode == "explain":
        return lambda: camlens.explain(model, x, layer=case.layer)
    if mode == "top5":
        return lambda: case.explainer(x, target=camlens.TopK(5))
    if mode == "full_backward":
        _set_requires_grad(model, True)
        model.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        case.cleanup.append(lambda: model.zero_grad(set_to_none=True))

        def full_backward() -> object:
            logits = model(xi)
            logits.max(1).values.sum().backward()
            return xi.grad

        return full_backward
    if mode == "hand_layer":
        return _prepare_hand_layer(case)
    raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")


def _prepare_hand_layer(case: Case) -> Call:
    """The lower bound: frozen parameters, one hook making the layer output a graph leaf.

    The autograd graph then starts at the layer, the backward runs through the head only, and
    the Grad-CAM maths (channel-mean gradient weights, weighted sum, ReLU, bilinear upsample,
    min-max normalise) is a handful of torch ops. Neither network modifies the layer output
    in place, so no copy is needed (camlens must assume it may and clones it).
    """
    model, x = case.model, case.x
    _set_requires_grad(model, False)
    slot: list[torch.Tensor] = []

    def hook(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        leaf = out.detach().requires_grad_()
        slot.append(leaf)
        return leaf

    handle = model.get_submodule(case.layer).register_forward_hook(hook)
    case.cleanup.append(handle.remove)
    case.cleanup.append(lambda: _set_requires_grad(model, True))

    def hand_layer() -> object:
        slot.clear()
        logits = model(x)
        (grad,) = torch.autograd.grad(logits.max(1).values.sum(), slot[0])
        with torch.no_grad():
            acts = slot[0]
            cam = (grad.mean((2, 3), keepdim=True) * acts).sum(1, keepdim=True).relu_()
            cam = nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear")[:, 0]
            flat = cam.flatten(1)
            low = flat.min(1, keepdim=True).values
            span = (flat.max(1, keepdim=True).values - low).clamp_min(1e-12)
            return ((flat - low) / span).view_as(cam).numpy()

    return hand_layer


def finish(case: Case) -> None:
    """Undo what a mode's set-up changed (hooks, parameter flags)."""
    while case.cleanup:
        case.cleanup.pop()()


def run_once(case: Case, mode: str) -> float:
    """Prepare ``mode``, time one call of it in seconds, then clean up."""
    call = prepare(case, mode)
    gc.collect()
    start = time.perf_counter()
    call()
    elapsed = time.perf_counter() - start
    finish(case)
    return elapsed


# --------------------------------------------------------------------------------------------
# Timing (in process) and peak memory (one subprocess per case)
# --------------------------------------------------------------------------------------------


def time_case(network: str, batch: int, warmup: int, rounds: int) -> dict[str, list[float]]:
    """Return each mode's timed samples (seconds), modes interleaved round-robin."""
    case = make_case(network, batch)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for r in range(warmup + rounds):
        order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
        for mode in order:
            elapsed = run_once(case, mode)
            if r >= warmup:
                times[mode].append(elapsed)
    return times


def memory_case(network: str, batch: int, mode: str) -> dict[str, Any]:
    """Build, then one warm-up and one measured call of ``mode``; return peak RSS growth.

    The baseline is the RSS after the model, the input and the explainer exist; the peak mark is
    reset there, so the build's own peak does not count. ``peak_mib`` is the peak over both
    calls minus that baseline. ``call_peak_mib`` is the measured call alone: its peak minus the
    RSS just before it (one-time costs of a first call, such as library code paged in and
    allocator pools, are then excluded).

    The peak is read from ``VmHWM``: ``ru_maxrss`` of a process started by fork + exec also
    holds the pre-exec image (the parent's size), so it is kept only for reference. If the
    kernel refuses the reset, ``peak_reset`` is False and the figures are upper bounds.
    """
    case = make_case(network, batch)
    gc.collect()
    baseline = status_kib("VmRSS")
    reset = reset_peak()
    call = prepare(case, mode)
    call()
    del call
    finish(case)
    gc.collect()
    before_call = status_kib("VmRSS")
    first_peak = status_kib("VmHWM")
    reset_peak()
    call = prepare(case, mode)
    call()
    del call
    finish(case)
    call_peak = status_kib("VmHWM")
    peak = max(first_peak, call_peak)
    return {
        "baseline_rss_mib": baseline / 1024,
        "peak_mib": (peak - baseline) / 1024,
        "call_peak_mib": (call_peak - before_call) / 1024,
        "retained_after_warmup_mib": (before_call - baseline) / 1024,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_reset": reset,
    }


def measure_memory(network: str, batch: int, mode: str) -> dict[str, Any]:
    """Run :func:`memory_case` in a fresh interpreter and return its result."""
    result: dict[str, Any] = run_json([__file__, "--memory-case", network, str(batch), mode])
    return result


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Describe the machine and the versions."""
    return {
        **host(),
        "torch_num_threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "camlens": camlens.__version__,
    }


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def markdown(results: list[dict[str, Any]]) -> str:
    """Render one table per (network, batch)."""
    out = []
    for res in results:
        out.append(f"\n**{res['network']}, batch {res['batch']}, {IMAGE_SIZE}x{IMAGE_SIZE}**\n")
        out.append(
            "| mode | median ms | min-max ms | IQR ms | time x fwd | peak MiB | mem x fwd "
            "| 2nd-call peak MiB |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        fwd_mem = res["modes"]["forward"].get("memory", {}).get("peak_mib")
        for mode in MODES:
            m = res["modes"][mode]
            mem = m.get("memory", {})
            peak = mem.get("peak_mib")
            ratio = "" if peak is None or not fwd_mem else f"{peak / fwd_mem:.2f}"
            out.append(
                f"| {LABELS[mode]} | {1e3 * m['median_s']:.1f} "
                f"| {1e3 * m['min_s']:.1f}-{1e3 * m['max_s']:.1f} "
                f"| {1e3 * m['q1_s']:.1f}-{1e3 * m['q3_s']:.1f} "
                f"| {m['ratio_to_forward']:.2f} | {_mib(peak)} | {ratio} "
                f"| {_mib(mem.get('call_peak_mib'))} |"
            )
    return "\n".join(out)


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check (report, never assert) the targets on every case measured."""
    rows = []
    for res in results:
        modes = res["modes"]
        top5 = modes["top5"]["median_s"] / modes["gradcam"]["median_s"]
        rows.append(
            {
                "network": res["network"],
                "batch": res["batch"],
                "gradcam_over_forward": modes["gradcam"]["ratio_to_forward"],
                "gradcam_target": TARGET_GRADCAM_RATIO,
                "gradcam_met": modes["gradcam"]["ratio_to_forward"] <= TARGET_GRADCAM_RATIO,
                "top5_over_gradcam": top5,
                "top5_target": TARGET_TOP5_RATIO,
                "top5_met": top5 <= TARGET_TOP5_RATIO,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the benchmark (or one memory case)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1, 1+3 rounds (smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 9)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default 2)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 16")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results path")
    parser.add_argument("--memory-case", nargs=3, metavar=("NET", "BATCH", "MODE"))
    args = parser.parse_args(argv)

    warnings.simplefilter("ignore", camlens.CamlensWarning)  # degenerate maps: random weights
    if args.memory_case:
        net, batch, mode = args.memory_case
        print(json.dumps(memory_case(net, int(batch), mode)))
        return

    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 9)
    batches = args.batches or ([1] if args.quick else [1, 16])
    info = machine()
    load_start = os.getloadavg()
    print(
        f"# camlens {info['camlens']}, torch {info['torch']}, numpy {info['numpy']}, "
        f"python {info['python']}; {info['cpu_model']}, {info['cpu_count']} cores, "
        f"torch.get_num_threads() = {torch.get_num_threads()}; "
        f"{warmup} warm-up + {rounds} timed rounds",
        flush=True,
    )
    results = []
    for network in args.networks:
        for batch in batches:
            t0 = time.perf_counter()
            times = time_case(network, batch, warmup, rounds)
            fwd = statistics.median(times["forward"])
            modes: dict[str, Any] = {}
            for mode in MODES:
                modes[mode] = summarise(times[mode])
                modes[mode]["ratio_to_forward"] = modes[mode]["median_s"] / fwd
                if not args.no_memory:
                    modes[mode]["memory"] = measure_memory(network, batch, mode)
            results.append({"network": network, "batch": batch, "modes": modes})
            print(
                f"# {network} batch {batch}: done in {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    load_end = os.getloadavg()
    checks = targets(results)
    print(markdown(results))
    print("\n| network | batch | GradCAM / forward (<= 1.15) | TopK(5) / top-1 (<= 2) |")
    print("|---|---:|---:|---:|")
    for c in checks:
        g = "met" if c["gradcam_met"] else "MISSED"
        t = "met" if c["top5_met"] else "MISSED"
        print(
            f"| {c['network']} | {c['batch']} | {c['gradcam_over_forward']:.2f} ({g}) "
            f"| {c['top5_over_gradcam']:.2f} ({t}) |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "config": {
            "warmup_rounds": warmup,
            "timed_rounds": rounds,
            "batches": batches,
            "image_size": IMAGE_SIZE,
            "layers": NETWORKS,
            "modes": LABELS,
        },
        "load_average_1_5_15": {"start": load_start, "end": load_end},
        "results": results,
        "targets": checks,
    }
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\n# wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
