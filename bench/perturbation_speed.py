"""How much camlens's gradient-free CAMs cost next to the forward passes they cannot avoid.

Run from the repository root::

    python bench/perturbation_speed.py            # full: 224x224, B = 32, 64, auto; 3 rounds
    python bench/perturbation_speed.py --quick    # smoke run: 112x112, B = auto, 1 round

Networks, one image (batch 1), seeded random weights, nothing downloaded: a ResNet-18-sized
network defined here (torchvision layout) explained at ``layer4`` (512 channels, 7x7) and
camlens's bundled MobileNetV2 explained at ``features`` (1280 channels, 7x7). Memory also uses
``resnet18_2048``: the same trunk with a 1x1 conv + BN + ReLU to 2048 channels appended
(``expand``, explained there). Modes, per network, interleaved round-robin in one process:

    forward           plain forward of the image under ``torch.inference_mode()`` (context)
    scorecam_<B>      ``camlens.ScoreCAM(model, layer, batch_size=B)(x)``
    reference_<B>     the forward passes Score-CAM cannot avoid: as many masked images as the
                      layer has non-constant channels, ``x * mask`` with a fresh random
                      ``(B, H, W)`` mask per batch, in batches of B, under inference_mode
    faster_scorecam   ``ScoreCAM(..., top_n=256)`` (Faster-Score-CAM) at the automatic B
    faster_reference  256 masked images in batches of the automatic B
    ablation_tail     ``camlens.AblationCAM(model, layer)(x)``: only the layer's tail re-runs
    ablation_full     the same with ``make_tail`` patched to the full-forward fallback

B is 32, 64 and ``auto`` = ``camlens._forwards.auto_batch_size(3 * H * W * 4)`` (55 at
224x224). Peak memory runs each (network, mode) in a fresh subprocess. Results go to stdout
(Markdown) and to ``bench/results/perturbation_speed.json``. Nothing asserts on the numbers.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import camlens
import camlens.backends.torch as torch_backend
from _harness import host, reset_peak, run_json, status_kib, summarise
from camlens import _forwards, zoo
from camlens.backends.torch._tail import Tail
from camlens.methods.perturbation import constant_channels

RESULTS = Path(__file__).resolve().parent / "results" / "perturbation_speed.json"
NETWORKS = {"resnet18": "layer4", "mobilenet_v2": "features", "resnet18_2048": "expand"}
TIMED_NETWORKS = ("resnet18", "mobilenet_v2")
MEMORY_NETWORKS = ("resnet18", "resnet18_2048", "mobilenet_v2")
MEMORY_MODES = ("forward_1", "forward_auto", "scorecam_auto")
FULL_BATCHES = ("32", "64", "auto")
FASTER_TOP_N = 256
#: (network, mode) pairs timed once, in the first timed round only: too slow to repeat.
ONCE = {("mobilenet_v2", "ablation_full")}
TARGET_SCORE_RATIO = 1.1
TARGET_ABLATION_SPEEDUP = 20.0

Call = Callable[[], object]


# --------------------------------------------------------------------------------------------
# The ResNet-18-sized network (torchvision layout, so layer names match: layer4, fc, ...)
# --------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 convs (stride on the first) with BN, plus the (projected) skip."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        """Build the block; a projection skip when the shape changes."""
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        y += identity
        out: torch.Tensor = self.relu(y)
        return out


class ResNet18(nn.Module):
    """ResNet-18: stem, BasicBlock stages [2, 2, 2, 2] (64..512), GAP, fc(1000).

    With ``expand``, a 1x1 conv + BN + ReLU to ``expand`` channels follows ``layer4`` (module
    ``expand``): a cheap way to a 2048-channel layer, as wide as ResNet-50's ``layer4``.
    """

    def __init__(self, num_classes: int = 1000, expand: int | None = None) -> None:
        """Build the network with torchvision's default initialisation."""
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        stages = []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(
                nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes))
            )
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.expand: nn.Module | None = None
        if expand is not None:
            self.expand = nn.Sequential(
                nn.Conv2d(inplanes, expand, 1, bias=False),
                nn.BatchNorm2d(expand),
                nn.ReLU(inplace=True),
            )
            inplanes = expand
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
        if self.expand is not None:
            x = self.expand(x)
        out: torch.Tensor = self.fc(torch.flatten(self.avgpool(x), 1))
        return out


def build(network: str, size: int) -> tuple[nn.Module, torch.Tensor]:
    """Return the seeded network (eval mode) and one seeded random image ``(1, 3, size, size)``."""
    torch.manual_seed(0)
    if network == "resnet18":
        model: nn.Module = ResNet18()
    elif network == "resnet18_2048":
        model = ResNet18(expand=2048)
    elif network == "mobilenet_v2":
        model = zoo.mobilenet_v2(pretrained=False)
    else:
        raise ValueError(f"unknown network {network!r}; choose from {sorted(NETWORKS)}")
    model.eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    return model, x


def auto_batch(size: int) -> int:
    """Return camlens's automatic batch size for one ``(3, size, size)`` float32 input."""
    return _forwards.auto_batch_size(3 * size * size * 4)


def batch_value(tag: str, size: int) -> int:
    """Return the batch size a tag names: a number, or ``auto``."""
    return auto_batch(size) if tag == "auto" else int(tag)


# --------------------------------------------------------------------------------------------
# What is timed
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One network: the model, its image, its layer, channel counts and the modes to time."""

    network: str
    size: int
    model: nn.Module
    x: torch.Tensor
    layer: str
    channels: int
    constant: int
    live: int
    calls: dict[str, Call] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)

    @property
    def scored(self) -> int:
        """Return how many masked images Score-CAM scores: the non-constant channels."""
        return self.channels - self.constant


def layer_activations(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """Return the layer's output ``(K, h, w)`` for the one image ``x``."""
    slot: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(
        lambda module, args, out: slot.append(out.detach().clone())
    )
    try:
        with torch.inference_mode():
            model(x)
    finally:
        handle.remove()
    return slot[0][0]


def reference(model: nn.Module, x: torch.Tensor, count: int, batch: int) -> None:
    """Run ``count`` masked copies of ``x`` in batches of ``batch``: ``x * mask``, random masks."""
    h, w = x.shape[-2:]
    with torch.inference_mode():
        for start in range(0, count, batch):
            mask = torch.rand(min(batch, count - start), h, w)
            model(x * mask[:, None])


@contextmanager
def forced_full_forwards() -> Iterator[None]:
    """Make the torch backend build the full-forward fallback instead of the torch.fx tail."""
    original = torch_backend.__dict__["make_tail"]

    def full(model: torch.nn.Module, name: str) -> Tail:
        return Tail(model, model.get_submodule(name), None, "forced")

    setattr(torch_backend, "make_tail", full)  # noqa: B010 (a monkeypatch, on purpose)
    try:
        yield
    finally:
        setattr(torch_backend, "make_tail", original)  # noqa: B010


def make_case(network: str, size: int, batches: tuple[str, ...]) -> Case:
    """Build the model, the image, every explainer and every mode's call (setup, not timed)."""
    model, x = build(network, size)
    layer = NETWORKS[network]
    acts = layer_activations(model, layer, x)
    channels = int(acts.shape[0])
    constant = int(constant_channels(acts).sum())
    live = int((acts.abs().reshape(channels, -1).amax(1) > 0).sum())
    case = Case(network, size, model, x, layer, channels, constant, live)
    auto = auto_batch(size)

    def keep(mode: str, call: Callable[[], Any]) -> Call:
        def run() -> object:
            case.last[mode] = call()
            return None

        return run

    def forward() -> object:
        with torch.inference_mode():
            return model(x)

    case.calls["forward"] = forward
    case.labels["forward"] = "plain forward, batch 1"
    for tag in batches:
        b = batch_value(tag, size)
        explainer = camlens.ScoreCAM(model, layer, batch_size=b)
        case.calls[f"scorecam_{tag}"] = keep(f"scorecam_{tag}", functools.partial(explainer, x))
        case.calls[f"reference_{tag}"] = functools.partial(reference, model, x, case.scored, b)
        case.labels[f"scorecam_{tag}"] = f"camlens ScoreCAM, B={b}"
        case.labels[f"reference_{tag}"] = f"reference: {case.scored} masked forwards, B={b}"
    faster = camlens.ScoreCAM(model, layer, batch_size=auto, top_n=FASTER_TOP_N)
    case.calls["faster_scorecam"] = keep("faster_scorecam", lambda: faster(x))
    case.calls["faster_reference"] = lambda: reference(model, x, FASTER_TOP_N, auto)
    case.labels["faster_scorecam"] = f"camlens ScoreCAM top_n={FASTER_TOP_N}, B={auto}"
    case.labels["faster_reference"] = f"reference: {FASTER_TOP_N} masked forwards, B={auto}"
    tail = camlens.AblationCAM(model, layer, batch_size=auto)
    full = camlens.AblationCAM(model, layer, batch_size=auto)

    def ablation_full() -> object:
        with forced_full_forwards():
            return full(x)

    case.calls["ablation_tail"] = keep("ablation_tail", lambda: tail(x))
    case.calls["ablation_full"] = keep("ablation_full", ablation_full)
    case.labels["ablation_tail"] = f"camlens AblationCAM, tail only, B={auto}"
    case.labels["ablation_full"] = f"camlens AblationCAM, full forwards, B={auto}"
    case.last["explainers"] = {"ablation_tail": tail, "ablation_full": full}
    return case


def run_once(call: Call) -> tuple[float, float]:
    """Time one call (after a garbage collection): wall and process CPU seconds."""
    gc.collect()
    cpu = time.process_time()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start, time.process_time() - cpu


def warm_up(case: Case, batches: tuple[str, ...]) -> None:
    """Warm every code path cheaply before the timed rounds (full warm-up rounds are long).

    Per batch size B: one reference batch and one ``ScoreCAM(top_n=B, batch_size=B)`` call (one
    batch of B masked images: the kernels, the allocator and camlens's Score-CAM code); then a
    plain forward and one tail-only Ablation-CAM call (its explainer traces the model with
    ``torch.fx`` once and keeps the split). The full-forward Ablation-CAM runs the same batch
    shapes as Score-CAM at the automatic B and has no set-up of its own to warm.
    """
    for tag in dict.fromkeys((*batches, "auto")):
        b = batch_value(tag, case.size)
        reference(case.model, case.x, b, b)
        camlens.ScoreCAM(case.model, case.layer, batch_size=b, top_n=min(b, case.channels))(case.x)
    case.calls["forward"]()
    case.calls["ablation_tail"]()


def time_case(case: Case, warmup: int, rounds: int) -> dict[str, Any]:
    """Time every mode round-robin; return wall and CPU samples (seconds), overall and per round.

    Each round starts one mode later. A mode in :data:`ONCE` runs in the first timed round only.
    """
    modes = list(case.calls)
    wall: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    per_round: list[dict[str, float]] = []
    per_round_cpu: list[dict[str, float]] = []
    load: list[float] = []
    for r in range(warmup + rounds):
        order = modes[r % len(modes) :] + modes[: r % len(modes)]
        this_wall: dict[str, float] = {}
        this_cpu: dict[str, float] = {}
        for mode in order:
            if (case.network, mode) in ONCE and r != warmup:
                continue
            this_wall[mode], this_cpu[mode] = run_once(case.calls[mode])
        if r >= warmup:
            for mode in this_wall:
                wall[mode].append(this_wall[mode])
                cpu[mode].append(this_cpu[mode])
            per_round.append(this_wall)
            per_round_cpu.append(this_cpu)
            load.append(os.getloadavg()[0])
        print(
            f"# {case.network}: round {r + 1}/{warmup + rounds} done", file=sys.stderr, flush=True
        )
    return {
        "wall": wall,
        "cpu": cpu,
        "per_round": per_round,
        "per_round_cpu": per_round_cpu,
        "load_1min_per_round": load,
    }


def _tail_kind(explainer: Any, layer: str) -> bool | None:
    """Return whether the explainer's cached tail ran tail-only (None if not inspectable)."""
    tails = getattr(getattr(explainer, "_backend", None), "_tails", {})
    tail = tails.get(layer)
    return None if tail is None else bool(tail.exact_tail_only)


def agreement(a: Any, b: Any) -> dict[str, float]:
    """Compare two explanations: max |diff| of the maps and of the raw maps scaled to [-1, 1]."""

    def scaled(raw: np.ndarray) -> np.ndarray:
        peak = np.abs(raw).reshape(len(raw), -1).max(1)
        return raw / np.where(peak > 0, peak, 1.0)[:, None, None]

    return {
        "maps_max_abs_diff": float(np.abs(a.maps - b.maps).max()),
        "raw_scaled_max_abs_diff": float(np.abs(scaled(a.raw) - scaled(b.raw)).max()),
        "raw_max_abs": float(np.abs(a.raw).max()),
    }


# --------------------------------------------------------------------------------------------
# Peak memory (one subprocess per case)
# --------------------------------------------------------------------------------------------


def memory_calls(
    network: str, mode: str, size: int
) -> tuple[Call, Call, Callable[[], dict[str, int]]]:
    """Return a warm-up call, the measured call and a function giving the channel counts.

    ``forward_1``: a plain forward of the image. ``forward_auto``: one plain forward of a batch
    of the automatic size B of masked images (what each reference batch runs). ``scorecam_auto``:
    ``ScoreCAM(model, layer)(x)`` at the automatic B; its warm-up is ``top_n=B``, one batch of
    the same shapes (a second full call would double the run time). The channel counts need a
    forward pass: call ``facts`` after the measurement, not before.
    """
    model, x = build(network, size)
    layer = NETWORKS[network]
    b = auto_batch(size)
    h, w = x.shape[-2:]

    def facts() -> dict[str, int]:
        acts = layer_activations(model, layer, x)
        return {"channels": int(acts.shape[0]), "constant": int(constant_channels(acts).sum())}

    if mode == "forward_1":

        def call() -> object:
            with torch.inference_mode():
                return model(x)

        return call, call, facts
    if mode == "forward_auto":

        def batch() -> object:
            with torch.inference_mode():
                return model(x * torch.rand(b, h, w)[:, None])

        return batch, batch, facts
    if mode == "scorecam_auto":
        warm = camlens.ScoreCAM(model, layer, top_n=b)
        explainer = camlens.ScoreCAM(model, layer)
        return lambda: warm(x), lambda: explainer(x), facts
    raise ValueError(f"unknown memory mode {mode!r}; choose from {MEMORY_MODES}")


def memory_case(network: str, mode: str, size: int) -> dict[str, Any]:
    """Build, then a warm-up and a measured call; return peak RSS growth (see gradcam_speed)."""
    warm, call, facts = memory_calls(network, mode, size)
    gc.collect()
    baseline = status_kib("VmRSS")
    reset = reset_peak()
    warm()
    gc.collect()
    before_call = status_kib("VmRSS")
    first_peak = status_kib("VmHWM")
    reset_peak()
    start = time.perf_counter()
    call()
    elapsed = time.perf_counter() - start
    call_peak = status_kib("VmHWM")
    return {
        **facts(),
        "batch": auto_batch(size),
        "baseline_rss_mib": baseline / 1024,
        "peak_mib": (max(first_peak, call_peak) - baseline) / 1024,
        "call_peak_mib": (call_peak - before_call) / 1024,
        "retained_after_warmup_mib": (before_call - baseline) / 1024,
        "call_s": elapsed,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_reset": reset,
    }


def measure_memory(network: str, mode: str, size: int) -> dict[str, Any]:
    """Run :func:`memory_case` in a fresh interpreter and return its result."""
    result: dict[str, Any] = run_json([__file__, "--memory-case", network, mode, str(size)])
    return result


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Describe the machine and the versions."""
    return {
        **host(),
        "torch_num_threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),  # type: ignore[no-untyped-call]
        "torch": torch.__version__,
        "numpy": np.__version__,
        "camlens": camlens.__version__,
    }


def _spread(m: dict[str, Any]) -> str:
    n = len(m["samples_s"])
    if n == 1:
        return "1 run"
    return f"{m['min_s']:.2f}-{m['max_s']:.2f} ({n} runs)"


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def score_rows(res: dict[str, Any], batches: tuple[str, ...]) -> list[dict[str, Any]]:
    """Return one row per Score-CAM comparison: camlens, reference, ratio, per-round ratios."""
    modes = res["modes"]
    pairs = [(f"scorecam_{t}", f"reference_{t}", t) for t in batches]
    pairs.append(("faster_scorecam", "faster_reference", f"top_n={FASTER_TOP_N}"))
    rows = []
    for cam, ref, tag in pairs:
        ratio = modes[cam]["median_s"] / modes[ref]["median_s"]
        cpu_ratio = modes[cam]["cpu"]["median_s"] / modes[ref]["cpu"]["median_s"]
        rounds = [r[cam] / r[ref] for r in res["per_round"] if cam in r and ref in r]
        rows.append(
            {
                "what": tag,
                "camlens": cam,
                "reference": ref,
                "ratio": ratio,
                "cpu_ratio": cpu_ratio,
                "per_round_ratios": rounds,
                "target": TARGET_SCORE_RATIO,
                "met": ratio <= TARGET_SCORE_RATIO,
            }
        )
    return rows


def markdown(results: list[dict[str, Any]], batches: tuple[str, ...], size: int) -> str:
    """Render the Score-CAM and Ablation-CAM tables."""
    out = []
    for res in results:
        modes, labels = res["modes"], res["labels"]
        out.append(
            f"\n**Score-CAM, {res['network']} at `{res['layer']}`, one {size}x{size} image:** "
            f"{res['channels']} channels, {res['scored']} non-constant (scored), "
            f"{res['constant']} constant (one all-zero-mask forward); plain forward "
            f"{1e3 * modes['forward']['median_s']:.0f} ms; 1-min load average after each "
            f"round: {', '.join(f'{v:.1f}' for v in res['load_1min_per_round'])}\n"
        )
        out.append(
            "| B | camlens s | min-max s | reference s | min-max s | camlens / reference "
            "| per round | CPU-time ratio | target <= 1.1 | reference ms / image |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
        for row in res["score_rows"]:
            cam, ref = modes[row["camlens"]], modes[row["reference"]]
            b = labels[row["camlens"]].rsplit("B=", 1)[1]
            what = f"{b} (auto)" if row["what"] == "auto" else b
            if row["what"].startswith("top_n"):
                what = f"{b}, Faster-Score-CAM {row['what']}"
            per_round = ", ".join(f"{r:.3f}" for r in row["per_round_ratios"])
            count = FASTER_TOP_N if row["what"].startswith("top_n") else res["scored"]
            out.append(
                f"| {what} | {cam['median_s']:.2f} | {_spread(cam)} | {ref['median_s']:.2f} "
                f"| {_spread(ref)} | **{row['ratio']:.3f}** | {per_round} | {row['cpu_ratio']:.3f} "
                f"| {_met(row['met'])} | {1e3 * ref['median_s'] / count:.1f} |"
            )
    out.append(f"\n**Ablation-CAM, one {size}x{size} image, tail only vs forced full forwards**\n")
    out.append(
        "| network, layer | channels ablated | B | tail s | min-max s | full s | min-max s "
        "| full / tail (>= 20) | maps max abs diff | raw max abs diff (scaled) |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for res in results:
        modes, abl = res["modes"], res["ablation"]
        tail, full = modes["ablation_tail"], modes["ablation_full"]
        b = res["labels"]["ablation_tail"].rsplit("B=", 1)[1]
        agree = abl["agreement"]
        out.append(
            f"| {res['network']}, `{res['layer']}` | {res['live']} | {b} "
            f"| {tail['median_s']:.3f} | {_spread(tail)} | {full['median_s']:.2f} "
            f"| {_spread(full)} | **{abl['speedup']:.0f}x** ({_met(abl['met'])}) "
            f"| {agree['maps_max_abs_diff']:.1e} | {agree['raw_scaled_max_abs_diff']:.1e} |"
        )
    return "\n".join(out)


def memory_markdown(memory: dict[str, dict[str, Any]], size: int) -> str:
    """Render the peak-memory table."""
    b = auto_batch(size)
    item = 3 * size * size * 4
    estimate = b * _forwards.ACTIVATION_FACTOR * item / 2**20
    out = [
        f"\n**Peak RSS increase, one {size}x{size} image, automatic B = {b}** (budget "
        f"`MEMORY_BUDGET` = {_forwards.MEMORY_BUDGET / 2**20:.0f} MiB for B x "
        f"{_forwards.ACTIVATION_FACTOR} x input size; at B = {b}: {estimate:.0f} MiB)\n",
        "| network, layer | channels (constant) | forward, batch 1 MiB | forward, batch B MiB "
        "| ScoreCAM MiB | ScoreCAM 2nd-call MiB | ScoreCAM / budget | ScoreCAM call s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    budget = _forwards.MEMORY_BUDGET / 2**20
    for network, modes in memory.items():
        if any("error" in m for m in modes.values()):
            errors = [m["error"] for m in modes.values() if "error" in m]
            out.append(f"| {network} | error: {errors} |||||||")
            continue
        one, batch, cam = modes["forward_1"], modes["forward_auto"], modes["scorecam_auto"]
        out.append(
            f"| {network}, `{NETWORKS[network]}` | {cam['channels']} ({cam['constant']}) "
            f"| {one['peak_mib']:.0f} | {batch['peak_mib']:.0f} | {cam['peak_mib']:.0f} "
            f"| {cam['call_peak_mib']:.0f} | {cam['peak_mib'] / budget:.2f} "
            f"| {cam['call_s']:.1f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the benchmark (or one memory case)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="112x112, B=auto, 1 round")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=0, help="warm-up rounds (default 0)")
    parser.add_argument("--size", type=int, default=None, help="image side (default 224)")
    parser.add_argument("--batches", nargs="+", default=None, help="default 32 64 auto")
    parser.add_argument(
        "--networks", nargs="+", default=list(TIMED_NETWORKS), choices=list(TIMED_NETWORKS)
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results path")
    parser.add_argument("--memory-case", nargs=3, metavar=("NET", "MODE", "SIZE"))
    args = parser.parse_args(argv)

    warnings.simplefilter("ignore", camlens.CamlensWarning)  # degenerate maps: random weights
    if args.memory_case:
        net, mode, size_arg = args.memory_case
        print(json.dumps(memory_case(net, mode, int(size_arg))))
        return

    size = args.size or (112 if args.quick else 224)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    batches = tuple(args.batches or (["auto"] if args.quick else FULL_BATCHES))
    info = machine()
    load_start = os.getloadavg()
    print(
        f"# camlens {info['camlens']}, torch {info['torch']}, numpy {info['numpy']}, "
        f"python {info['python']}; {info['cpu_model']}, {info['cpu_count']} cores, "
        f"torch.get_num_threads() = {torch.get_num_threads()}; {size}x{size}, "
        f"{args.warmup} warm-up + {rounds} timed rounds; load average at start "
        f"{load_start[0]:.2f}",
        flush=True,
    )
    results = []
    t_start = time.perf_counter()
    for network in args.networks:
        t0 = time.perf_counter()
        case = make_case(network, size, batches)
        warm_up(case, batches)
        timed = time_case(case, args.warmup, rounds)
        modes = {mode: summarise(samples) for mode, samples in timed["wall"].items()}
        for mode, samples in timed["cpu"].items():
            modes[mode]["cpu"] = summarise(samples)
        explainers = case.last["explainers"]
        ablation_agree = agreement(case.last["ablation_tail"], case.last["ablation_full"])
        speedup = modes["ablation_full"]["median_s"] / modes["ablation_tail"]["median_s"]
        scorecams = [case.last[f"scorecam_{t}"] for t in batches]
        res: dict[str, Any] = {
            "network": network,
            "layer": case.layer,
            "channels": case.channels,
            "constant": case.constant,
            "scored": case.scored,
            "live": case.live,
            "labels": case.labels,
            "modes": modes,
            "per_round": timed["per_round"],
            "per_round_cpu": timed["per_round_cpu"],
            "load_1min_per_round": timed["load_1min_per_round"],
            "ablation": {
                "speedup": speedup,
                "target": TARGET_ABLATION_SPEEDUP,
                "met": speedup >= TARGET_ABLATION_SPEEDUP,
                "timed_once": (network, "ablation_full") in ONCE,
                "agreement": ablation_agree,
                "tail_only_used": {k: _tail_kind(e, case.layer) for k, e in explainers.items()},
            },
            "scorecam_batch_agreement": {
                f"{batches[0]}_vs_{t}": agreement(scorecams[0], s)
                for t, s in zip(batches[1:], scorecams[1:], strict=True)
            },
            "seconds": time.perf_counter() - t0,
        }
        res["score_rows"] = score_rows(res, batches)
        results.append(res)
        print(f"# {network}: done in {res['seconds']:.0f} s", file=sys.stderr, flush=True)
        del case
        gc.collect()
    memory: dict[str, dict[str, Any]] = {}
    if not args.no_memory:
        for network in MEMORY_NETWORKS:
            memory[network] = {m: measure_memory(network, m, size) for m in MEMORY_MODES}
            print(f"# memory {network}: done", file=sys.stderr, flush=True)
    load_end = os.getloadavg()
    print(markdown(results, batches, size))
    for res in results:
        once = " (full forwards timed once)" if res["ablation"]["timed_once"] else ""
        used = res["ablation"]["tail_only_used"]
        print(
            f"\n# {res['network']}: tail-only path used by (tail, full) = "
            f"({used['ablation_tail']}, {used['ablation_full']}){once}"
        )
        for key, agree in res["scorecam_batch_agreement"].items():
            print(
                f"# {res['network']}: Score-CAM maps B {key}: max abs diff "
                f"{agree['maps_max_abs_diff']:.1e}"
            )
    if memory:
        print(memory_markdown(memory, size))
    total = time.perf_counter() - t_start
    print(f"\n# load average at end {load_end[0]:.2f}; total {total / 60:.1f} min")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "config": {
            "warmup_rounds": args.warmup,
            "timed_rounds": rounds,
            "image_size": size,
            "batches": {t: batch_value(t, size) for t in batches},
            "auto_batch": auto_batch(size),
            "faster_top_n": FASTER_TOP_N,
            "layers": NETWORKS,
            "timed_once": sorted(ONCE),
            "memory_budget_mib": _forwards.MEMORY_BUDGET / 2**20,
            "activation_factor": _forwards.ACTIVATION_FACTOR,
        },
        "load_average_1_5_15": {"start": load_start, "end": load_end},
        "results": results,
        "memory": memory,
        "total_s": total,
    }
    args.output.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\n# wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
