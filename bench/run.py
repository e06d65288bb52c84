"""camlens against its peers: the same models, inputs and machine, one fresh process per case.

Run from the repository root, in the benchmark environment (``make bench-env``)::

    .venv-bench/bin/python bench/run.py                         # every case (about an hour)
    .venv-bench/bin/python bench/run.py --only 'torch/*/gradcam/*/1'   # a subset (fnmatch)
    .venv-bench/bin/python bench/run.py --list                  # print the case ids
    .venv-bench/bin/python bench/run.py --report                # re-render the saved results

A case is ``framework/library/method/network/batch``. Each runs in a fresh interpreter that
builds the network (seeded random weights), the input and the library's call, measures peak RSS
over a first and a second call, then times the call and a plain forward of the same network
interleaved (``--rounds`` each, default 5), so every ratio to the forward is measured within
one process. The maps of the measured call are saved and compared with camlens's maps of the
same (method, network, batch): correlation and largest absolute difference after min-max
normalisation at the input's resolution. Results: ``bench/results/run.json`` and one ``.npz``
of maps per case; Markdown tables on stdout (``docs/benchmarks.md`` holds a committed run).
A peer that fails on a case (an exception, a missing package, a timeout) is a result too.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from _harness import call_peaks, corr, host, interleave, minmax, run_json, summarise

# Before TensorFlow can be imported (only the Keras workers import it): TensorFlow 2.21's oneDNN
# kernels crash in some convolution backward passes on these CPUs; quieter logs.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = Path(__file__).resolve().parent / "results"
ROUNDS = 5
#: CPU threads per framework. One: on a shared 2-core machine, two OpenMP threads stall in every
#: parallel region whenever another process holds a core (single forwards then vary 10x).
THREADS = 1
#: Grad-CAM family on PyTorch: camlens's time at most this many plain forwards.
TORCH_TARGET = 1.10
#: Methods held to the peers only: Finer-CAM needs a forward pass more by construction (the
#: logits that pick its references), KPCA-CAM an eigendecomposition per map, RefineCAM a
#: backward to a second, earlier layer, Smooth Grad-CAM++ a pass per noisy copy, DFF an NMF.
NO_FORWARD_TARGET = ("top5", "finercam", "kpcacam", "refinecam", "smoothgradcam++", "dff")
#: glibc's malloc raises its mmap threshold each time it frees a large mapped block, so how
#: fast a forward runs (how many page faults it takes) depends on what the process allocated
#: before: a plain forward ran 1.4x faster beside a peer that keeps a graph than beside camlens.
#: Fixed thresholds give every process the same allocator (large tensors stay in the heap).
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**25), "MALLOC_TRIM_THRESHOLD_": str(2**27)}
#: Seconds a case may run before it is recorded as timed out.
CASE_TIMEOUT = 900.0

TORCH_LIBRARIES = {
    "gradcam": ("camlens", "pytorch-grad-cam", "torchcam", "captum"),
    "gradcam++": ("camlens", "pytorch-grad-cam", "torchcam"),
    "layercam": ("camlens", "pytorch-grad-cam", "torchcam"),
    "eigencam": ("camlens", "pytorch-grad-cam"),
    "cam": ("camlens", "torchcam"),
    "fem": ("camlens", "pytorch-grad-cam"),
    "kpcacam": ("camlens", "pytorch-grad-cam"),
    "finercam": ("camlens", "pytorch-grad-cam"),
    "top5": ("camlens", "pytorch-grad-cam", "torchcam", "captum"),
    "hirescam": ("camlens", "pytorch-grad-cam"),
    "xgradcam": ("camlens", "pytorch-grad-cam", "torchcam"),
    "gradcam-elementwise": ("camlens", "pytorch-grad-cam"),
    "eigengradcam": ("camlens", "pytorch-grad-cam"),
    "refinecam": ("camlens", "pytorch-grad-cam", "torchcam"),
    "smoothgradcam++": ("camlens", "torchcam"),
    "dff": ("camlens", "pytorch-grad-cam"),
}
#: Input-gradient methods, on ResNet-50 only: the peers guide ``nn.ReLU`` modules only, and
#: MobileNetV2's are ``ReLU6``. Held to the peers only (a full backward to the input).
INPUT_LIBRARIES = {
    "saliency": ("camlens", "captum"),
    "guidedbackprop": ("camlens", "pytorch-grad-cam", "captum"),
    "guidedgradcam": ("camlens", "captum"),
}
#: SmoothGrad (50 full backwards per image), on ResNet-18 at batch 1 only.
NOISE_LIBRARIES = {"smoothgrad": ("camlens", "captum")}
PERTURBATION_LIBRARIES = {
    "scorecam": ("camlens", "pytorch-grad-cam", "torchcam"),
    "ablationcam": ("camlens", "pytorch-grad-cam"),
    "reciprocam": ("camlens",),  # no peer has it: checked against camlens's Score-CAM
}
#: camlens on the ONNX export of the torch network, against camlens on the torch network.
ONNX_METHODS = ("ablationcam", "scorecam")
KERAS_LIBRARIES = {
    "gradcam": ("camlens", "keras-io-recipe", "tf-keras-vis"),
    "gradcam++": ("camlens", "tf-keras-vis"),
    "saliency": ("camlens", "tf-keras-vis"),
}
#: SmoothGrad on Keras (``_keras_cases.SMOOTHGRAD_SAMPLES`` copies), on the seed network at
#: batch 1 only.
KERAS_NOISE_LIBRARIES = {"smoothgrad": ("camlens", "tf-keras-vis")}
#: The Keras Grad-CAM targets: at most 1.3x the compiled forward, twice as fast as the peers.
KERAS_GRADCAM = ("gradcam", "gradcam++")
TORCH_REFERENCES = ("forward", "backward_layer", "full_backward")
KERAS_REFERENCES = ("forward", "forward_eager", "backward_layer", "full_backward")
REFERENCE_LABELS = {
    "forward": "plain forward",
    "forward_eager": "eager forward",
    "backward_layer": "forward + backward to the layer",
    "full_backward": "forward + full backward to the input",
}


@dataclass(frozen=True)
class Case:
    """One measurement: which framework, library, method, network and batch size."""

    framework: str
    library: str
    method: str
    network: str
    batch: int

    @property
    def id(self) -> str:
        """Return ``framework/library/method/network/batch``."""
        return f"{self.framework}/{self.library}/{self.method}/{self.network}/{self.batch}"

    @classmethod
    def parse(cls, text: str) -> Case:
        """Read a case back from its id."""
        framework, library, method, network, batch = text.split("/")
        return cls(framework, library, method, network, int(batch))

    @property
    def maps_path(self) -> Path:
        """Return where the worker saves this case's maps."""
        return RESULTS / "maps" / (self.id.replace("/", "__").replace("+", "p") + ".npz")

    def camlens_twin(self) -> Case:
        """Return camlens's case for the same method, network and batch (on the torch network
        for an ONNX case: the network it was exported from)."""
        framework = "torch" if self.framework == "onnx" else self.framework
        return Case(framework, "camlens", self.method, self.network, self.batch)


def all_cases() -> list[Case]:
    """Return every case of the suite, references first within each (network, batch)."""
    cases: list[Case] = []
    for network in ("resnet50", "mobilenet_v2"):
        for batch in (1, 16):
            cases += [Case("torch", "reference", r, network, batch) for r in TORCH_REFERENCES]
            for method, libraries in TORCH_LIBRARIES.items():
                cases += [Case("torch", lib, method, network, batch) for lib in libraries]
            if network == "resnet50":
                for method, libraries in INPUT_LIBRARIES.items():
                    cases += [Case("torch", lib, method, network, batch) for lib in libraries]
    cases += [Case("torch", "reference", r, "resnet18", 1) for r in TORCH_REFERENCES[:1]]
    for method, libraries in {**NOISE_LIBRARIES, **PERTURBATION_LIBRARIES}.items():
        cases += [Case("torch", lib, method, "resnet18", 1) for lib in libraries]
    cases.append(Case("onnx", "reference", "forward", "resnet18", 1))
    cases += [Case("onnx", "camlens", method, "resnet18", 1) for method in ONNX_METHODS]
    for network in ("seed", "xception"):
        for batch in (1, 8):
            cases += [Case("keras", "reference", r, network, batch) for r in KERAS_REFERENCES]
            for method, libraries in KERAS_LIBRARIES.items():
                cases += [Case("keras", lib, method, network, batch) for lib in libraries]
    for method, libraries in KERAS_NOISE_LIBRARIES.items():
        cases += [Case("keras", lib, method, "seed", 1) for lib in libraries]
    return cases


# --------------------------------------------------------------------------------------------
# The worker: one case in this (fresh) process
# --------------------------------------------------------------------------------------------


def _as_maps(result: Any) -> np.ndarray | None:
    """Return a call's maps as ``(M, H, W)`` float32, or ``None`` for a reference call."""
    if result is None:
        return None
    return np.asarray(result, dtype=np.float32).reshape(-1, *np.shape(result)[-2:])


def worker(case: Case, rounds: int, threads: int) -> dict[str, Any]:
    """Build the case, measure peak memory over two calls, then time it against the forward."""
    start = time.perf_counter()
    if case.framework == "torch":
        import _torch_cases as cases
    elif case.framework == "onnx":
        import _onnx_cases as cases  # type: ignore[no-redef]
    else:
        import _keras_cases as cases  # type: ignore[no-redef]
    cases.set_threads(threads)
    try:
        built = cases.make(case.library, case.method, case.network, case.batch)
    except Exception as exc:  # a peer that cannot take the case is a result
        return {"status": "failed", "stage": "build", "error": f"{type(exc).__name__}: {exc}"}
    build_s = time.perf_counter() - start
    try:
        result, memory = call_peaks(built.call)
        maps = _as_maps(result)
        if maps is not None:
            case.maps_path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(case.maps_path, maps=maps)
        built.forward()  # the forward's own first call (tracing, allocator) is not timed
        times = interleave({"call": built.call, "forward": built.forward}, rounds)
    except Exception as exc:
        return {"status": "failed", "stage": "call", "error": f"{type(exc).__name__}: {exc}"}
    call, forward = summarise(times["call"]["wall"]), summarise(times["forward"]["wall"])
    call_cpu, forward_cpu = summarise(times["call"]["cpu"]), summarise(times["forward"]["cpu"])
    return {
        "status": "ok",
        "how": built.how,
        "info": built.info,
        "build_s": build_s,
        "memory": memory,
        "call": call,
        "forward": forward,
        "call_cpu": call_cpu,
        "forward_cpu": forward_cpu,
        "ratio_to_forward": call["median_s"] / forward["median_s"],
        "cpu_ratio_to_forward": call_cpu["median_s"] / forward_cpu["median_s"],
        "maps_shape": None if maps is None else list(maps.shape),
        "versions": cases.versions(),
    }


# --------------------------------------------------------------------------------------------
# The parent: run the cases, compare the maps, report
# --------------------------------------------------------------------------------------------


def run_case(case: Case, rounds: int, threads: int, *, fixed_malloc: bool) -> dict[str, Any]:
    """Run one case in a fresh interpreter and return its record."""
    start = time.perf_counter()
    load = os.getloadavg()[0]
    env = dict(os.environ)
    if fixed_malloc:
        env.update(FIXED_MALLOC)
    if threads > 0:  # OpenMP and MKL pools too, not only the frameworks' own settings
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = run_json(
        [__file__, "--worker", case.id, "--rounds", str(rounds), "--threads", str(threads)],
        env=env,
        error_lines=3,
        timeout=CASE_TIMEOUT,
    )
    if "error" in out and "status" not in out:
        out = {"status": "failed", "stage": "process", "error": " | ".join(out["error"])}
    out["wall_s"] = time.perf_counter() - start
    out["load_1min"] = {"start": load, "end": os.getloadavg()[0]}
    return dict(out)


def _resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(M, h, w)`` maps to ``size`` with camlens's bilinear matrices."""
    from camlens.postprocess import resize

    return np.asarray(resize(maps.astype(np.float64), size))


def agreement(case: Case) -> dict[str, Any] | None:
    """Compare a case's maps with camlens's for the same method, network and batch."""
    twin = case.camlens_twin()
    if twin == case or case.library == "reference" or not twin.maps_path.exists():
        return None
    if not case.maps_path.exists():
        return None
    ours = np.load(twin.maps_path)["maps"]
    theirs = np.load(case.maps_path)["maps"]
    note = ""
    if theirs.shape[-2:] != ours.shape[-2:]:
        theirs = _resize(theirs, ours.shape[-2:])
        note = "upsampled by the benchmark (bilinear) from the library's layer-resolution maps"
    if theirs.shape != ours.shape:
        return {"error": f"shapes differ: {theirs.shape} vs camlens {ours.shape}"}
    a, b = minmax(ours), minmax(np.nan_to_num(theirs))
    if case.method == "dff":  # concepts come in no order: match them across the batch
        b, order = match_concepts(a, b, len(a) // case.batch)
        note = f"concepts matched by the best permutation (peer's {order} = camlens's 0..k-1)"
    corrs = [corr(a[i], b[i]) for i in range(len(a))]
    finite = [c for c in corrs if np.isfinite(c)]
    diffs = np.abs(a - b).reshape(len(a), -1).max(1)
    return {
        "min_corr": min(finite) if finite else float("nan"),
        "median_corr": float(np.median(finite)) if finite else float("nan"),
        "max_abs_diff": float(diffs.max()),
        "median_max_abs_diff": float(np.median(diffs)),
        "constant_maps": len(corrs) - len(finite),
        "note": note,
    }


def match_concepts(ours: np.ndarray, theirs: np.ndarray, k: int) -> tuple[np.ndarray, list[int]]:
    """Reorder the peer's ``(N * k, H, W)`` concept maps (image-major) to camlens's order.

    Deep Feature Factorization's concepts are shared by the batch and come in no particular
    order: the permutation that maximises the summed correlation over the batch is taken.
    """
    from itertools import permutations

    a = ours.reshape(-1, k, *ours.shape[1:])
    b = theirs.reshape(-1, k, *theirs.shape[1:])
    score = np.array(
        [[sum(corr(a[n, i], b[n, j]) for n in range(len(a))) for j in range(k)] for i in range(k)]
    )
    best = max(permutations(range(k)), key=lambda p: np.nansum(score[range(k), list(p)]))
    return b[:, list(best)].reshape(theirs.shape), list(best)


def load(path: Path) -> dict[str, Any]:
    """Return the saved results, or an empty record."""
    if path.exists():
        saved: dict[str, Any] = json.loads(path.read_text())
        return saved
    return {"cases": {}}


def _ms(record: dict[str, Any], key: str = "call") -> str:
    m = record[key]
    return f"{1e3 * m['median_s']:.1f} ({1e3 * m['min_s']:.0f}-{1e3 * m['max_s']:.0f})"


def _groups(cases: dict[str, Any]) -> Iterator[tuple[str, str, int, list[Case]]]:
    """Yield (framework, network, batch, cases) in the suite's order."""
    order = [c for c in all_cases() if c.id in cases]
    seen: list[tuple[str, str, int]] = []
    for c in order:
        key = (c.framework, c.network, c.batch)
        if key not in seen:
            seen.append(key)
    for fw, net, batch in seen:
        yield (
            fw,
            net,
            batch,
            [c for c in order if (c.framework, c.network, c.batch) == (fw, net, batch)],
        )


def markdown(saved: dict[str, Any]) -> str:
    """Render one table per (framework, network, batch), and the failures."""
    cases = saved["cases"]
    out: list[str] = []
    for fw, net, batch, group in _groups(cases):
        out.append(f"\n**{fw}: {net}, batch {batch}**\n")
        out.append(
            "| library | method | median ms (min-max) | forward ms | x forward | x forward CPU "
            "| x camlens CPU | peak MiB | corr (min) | max abs diff |"
        )
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in group:
            rec = cases[c.id]
            name = c.method
            if c.library == "reference":
                name = REFERENCE_LABELS.get(c.method, c.method)
            if rec["status"] != "ok":
                err = str(rec.get("error", "")).replace("|", "/")[:120]
                out.append(f"| {c.library} | {name} | failed: {err} | | | | | | | |")
                continue
            twin = cases.get(c.camlens_twin().id, {})
            x_cam = ""
            if c.library not in ("camlens", "reference") and twin.get("status") == "ok":
                x_cam = f"{rec['cpu_ratio_to_forward'] / twin['cpu_ratio_to_forward']:.2f}"
            agree = rec.get("agreement") or {}
            cor = f"{agree['min_corr']:.3f}" if "min_corr" in agree else ""
            diff = f"{agree['max_abs_diff']:.3f}" if "max_abs_diff" in agree else ""
            if not rec.get("fixed_malloc"):
                name += " †"  # measured with glibc's adaptive malloc thresholds
            out.append(
                f"| {c.library} | {name} | {_ms(rec)} | {1e3 * rec['forward']['median_s']:.1f} "
                f"| {rec['ratio_to_forward']:.2f} | {rec['cpu_ratio_to_forward']:.2f} | {x_cam} "
                f"| {rec['memory']['peak_mib']:.0f} | {cor} | {diff} |"
            )
    return "\n".join(out)


def _ok(cases: dict[str, Any], case: Case) -> dict[str, Any] | None:
    rec = cases.get(case.id)
    return rec if rec is not None and rec.get("status") == "ok" else None


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def targets(saved: dict[str, Any]) -> list[str]:
    """Check the targets (report, never assert) on the cases measured; CPU-time ratios."""
    cases = saved["cases"]
    rows = []
    for fw, net, batch, group in _groups(cases):
        for method in dict.fromkeys(c.method for c in group if c.library != "reference"):
            ours = _ok(cases, Case(fw, "camlens", method, net, batch))
            if ours is None:
                continue
            mine = ours["cpu_ratio_to_forward"]
            peers = {
                c.library: _ok(cases, c)
                for c in group
                if c.method == method and c.library not in ("camlens", "reference")
            }
            timed = {lib: r for lib, r in peers.items() if r is not None}
            checks = []
            if fw == "torch" and method in TORCH_LIBRARIES and method not in NO_FORWARD_TARGET:
                checks.append(
                    f"x forward {mine:.2f} (<= {TORCH_TARGET}: {_met(mine <= TORCH_TARGET)})"
                )
            if method == "top5":
                single = _ok(cases, Case(fw, "camlens", "gradcam", net, batch))
                if single is not None:
                    r = mine / single["cpu_ratio_to_forward"]
                    checks.append(f"top-5 / top-1 {r:.2f} (<= 2: {_met(r <= 2)})")
            if fw == "keras" and method in KERAS_GRADCAM:
                checks.append(f"x forward {mine:.2f} (<= 1.3: {_met(mine <= 1.3)})")
            if method == "reciprocam":
                score = _ok(cases, Case(fw, "camlens", "scorecam", net, batch))
                if score is not None:
                    x = score["cpu_ratio_to_forward"] / mine
                    checks.append(
                        f"camlens Score-CAM / Recipro-CAM {x:.0f} (>= 20: {_met(x >= 20)})"
                    )
            if fw == "onnx":
                torch_twin = _ok(cases, Case("torch", "camlens", method, net, batch))
                if torch_twin is not None:
                    t = ours["call_cpu"]["median_s"] / torch_twin["call_cpu"]["median_s"]
                    checks.append(f"CPU time ONNX / torch {t:.2f} (reported, no target)")
            elif method == "ablationcam":
                for lib, r in timed.items():
                    x = r["cpu_ratio_to_forward"] / mine
                    checks.append(f"{lib} / camlens {x:.0f} (>= 20: {_met(x >= 20)})")
            elif timed:
                fastest = min(r["cpu_ratio_to_forward"] for r in timed.values())
                need = 2.0 if fw == "keras" and method in KERAS_GRADCAM else 1.0
                checks.append(
                    f"fastest peer / camlens {fastest / mine:.2f} (>= {need:g}: "
                    f"{_met(fastest / mine >= need)})"
                )
                lowest = min(r["memory"]["peak_mib"] for r in timed.values())
                if fw == "torch" and method in TORCH_LIBRARIES and method not in NO_FORWARD_TARGET:
                    ok = ours["memory"]["peak_mib"] <= lowest
                    checks.append(
                        f"peak {ours['memory']['peak_mib']:.0f} MiB vs lowest peer {lowest:.0f} "
                        f"({_met(ok)})"
                    )
            failed = [lib for lib, r in peers.items() if r is None]
            if failed:
                checks.append("failed: " + ", ".join(failed))
            rows.append(f"| {fw} | {net} | {batch} | {method} | {'; '.join(checks)} |")
    head = ["| framework | network | batch | method | targets (CPU-time ratios) |"]
    return [*head, "|---|---|---:|---|---|", *rows]


def main(argv: list[str] | None = None) -> None:
    """Parse the command line; run the selected cases (or one worker) and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=["*"], help="case id patterns (fnmatch)")
    parser.add_argument("--skip", nargs="+", default=[], help="case id patterns to leave out")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="timed rounds (default 5)")
    parser.add_argument(
        "--threads",
        type=int,
        default=THREADS,
        help="CPU threads per framework (default 1; 0 = the frameworks' defaults)",
    )
    parser.add_argument(
        "--glibc-malloc",
        action="store_true",
        help="leave glibc's adaptive malloc thresholds (default: fixed, FIXED_MALLOC)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "run.json")
    parser.add_argument("--list", action="store_true", help="print the case ids and stop")
    parser.add_argument("--report", action="store_true", help="render the saved results only")
    parser.add_argument("--worker", metavar="CASE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(Case.parse(args.worker), args.rounds, args.threads)))
        return
    selected = [
        c
        for c in all_cases()
        if any(fnmatch.fnmatch(c.id, p) for p in args.only)
        and not any(fnmatch.fnmatch(c.id, p) for p in args.skip)
    ]
    if args.list:
        print("\n".join(c.id for c in selected))
        return
    saved = load(args.output)
    if not args.report:
        saved["machine"] = host()
        saved.setdefault("commands", []).append(" ".join(["python", *sys.argv]))
        for i, case in enumerate(selected, 1):
            record = run_case(case, args.rounds, args.threads, fixed_malloc=not args.glibc_malloc)
            record["rounds"] = args.rounds
            record["threads"] = args.threads
            record["fixed_malloc"] = not args.glibc_malloc
            saved["cases"][case.id] = record
            status = record["status"]
            if status == "ok":
                status = f"{record['ratio_to_forward']:.2f}x forward"
            print(
                f"# [{i}/{len(selected)}] {case.id}: {status} ({record['wall_s']:.0f} s, "
                f"load {record['load_1min']['start']:.1f})",
                file=sys.stderr,
                flush=True,
            )
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(saved, indent=2) + "\n")
    for case_id, record in saved["cases"].items():
        if record.get("status") == "ok":
            record["agreement"] = agreement(Case.parse(case_id))
    args.output.write_text(json.dumps(saved, indent=2) + "\n")
    print(markdown(saved))
    print("\n" + "\n".join(targets(saved)))


if __name__ == "__main__":
    main()
