"""How much a camlens Grad-CAM costs on Keras next to a forward pass and the eager recipe.

Run from the repository root::

    python bench/keras_speed.py                       # full: 2 warm-up + 9 rounds, batch 1 and 8
    python bench/keras_speed.py --quick               # smoke run: batch 1, 1 warm-up + 3 rounds
    python bench/keras_speed.py --backend jax --quick # Keras on JAX (also: torch)

Networks, at 299x299, seeded random weights, nothing downloaded:

    seed      Input -> nested Xception base ("xception") -> GAP -> Dropout -> Dense(1): the
              seed's age regressor, explained at ``block14_sepconv2_act`` for ``Output(0)``
    xception  flat ``keras.applications.Xception(weights=None)`` with its 1000-class softmax
              top, explained at ``block14_sepconv2_act`` for the top-1 pre-softmax logit

Modes, per (network, batch); which run depends on the Keras backend:

    forward           (a)  ``model(x, training=False)``, eager: the reference
    forward_compiled  (a2) ``tf.function`` of it (TensorFlow) or ``jax.jit`` of
                           ``model.stateless_call`` (JAX); not on torch
    gradcam           (b)  ``camlens.GradCAM(model, layer)(x, target)``, explainer built once
    gradcampp         (c)  ``camlens.GradCAMPlusPlus`` likewise
    recipe            (d)  the keras.io / seed recipe by hand: ``tf.GradientTape``, eager;
                           TensorFlow only

Each (network, batch) is timed in its own subprocess, modes round-robin (each round starts at
the next mode). The first call of each mode (tracing, compilation) is timed apart, before the
warm-up rounds. Peak memory runs each (network, batch, mode) in a fresh subprocess. Every
subprocess gets ``KERAS_BACKEND`` from ``--backend``; this process never imports Keras. Results
go to stdout (Markdown) and to ``bench/results/keras_speed_<backend>.json``. Nothing here
asserts on the numbers.
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

from _harness import corr, host, minmax, reset_peak, run_json, status_kib, summarise

# Before TensorFlow is imported (Keras and TensorFlow are imported lazily, in the workers):
# TensorFlow 2.21's oneDNN kernels crash in some convolution backward passes here; quieter logs.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
IMAGE_SIZE = 299
LAYER = "block14_sepconv2_act"
NETWORKS = ("seed", "xception")
BACKENDS = ("tensorflow", "jax", "torch")
MODES = ("forward", "forward_compiled", "gradcam", "gradcampp", "recipe")
LABELS = {
    "forward": "(a) forward, eager `model(x)`",
    "forward_compiled": "(a2) forward, compiled",
    "gradcam": "(b) GradCAM explainer",
    "gradcampp": "(c) GradCAM++ explainer",
    "recipe": "(d) eager recipe, GradientTape",
}
TARGET_RATIO_TO_FORWARD = 1.3
TARGET_SPEEDUP_OVER_RECIPE = 2.0

Call = Callable[[], object]


def modes_for(backend: str) -> tuple[str, ...]:
    """Return the modes that apply on a Keras backend."""
    skip = {"tensorflow": set(), "jax": {"recipe"}, "torch": {"forward_compiled", "recipe"}}
    return tuple(m for m in MODES if m not in skip[backend])


# --------------------------------------------------------------------------------------------
# Models, inputs and the calls to time (worker side: Keras is imported here only)
# --------------------------------------------------------------------------------------------


def build(network: str, batch: int) -> tuple[Any, Any]:
    """Return the seeded model and a seeded random input batch (a backend tensor)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    shape = (IMAGE_SIZE, IMAGE_SIZE, 3)
    if network == "seed":
        base = keras.applications.Xception(weights=None, include_top=False, input_shape=shape)
        inputs = keras.Input(shape)
        h = base(inputs)
        h = layers.GlobalAveragePooling2D(name="global_average_pooling2d_12")(h)
        h = layers.Dropout(0.5, name="dropout_12")(h)
        outputs = layers.Dense(1, name="dense_12")(h)
        model = keras.Model(inputs, outputs, name="age_regressor")
    elif network == "xception":
        model = keras.applications.Xception(weights=None)
    else:
        raise ValueError(f"unknown network {network!r}; choose from {NETWORKS}")
    x = np.random.default_rng(1).uniform(-1, 1, size=(batch, *shape)).astype("float32")
    return model, keras.ops.convert_to_tensor(x)


def _target(network: str) -> Any:
    """Return camlens's target: ``Output(0)`` for the regressor, top-1 (``None``) otherwise."""
    import camlens

    return camlens.Output(0) if network == "seed" else None


def _sync(out: Any) -> Any:
    """Wait for ``out`` (JAX dispatches asynchronously) by copying it to NumPy; it is small."""
    from keras import ops

    return ops.convert_to_numpy(out)


@dataclass
class Case:
    """One (network, batch): model, input, and the per-mode calls once they are made."""

    network: str
    batch: int
    model: Any
    x: Any
    calls: dict[str, Call] = field(default_factory=dict)
    build_s: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


def make_case(network: str, batch: int) -> Case:
    """Build the model and the input (set-up: not timed)."""
    model, x = build(network, batch)
    return Case(network, batch, model, x)


def prepare(case: Case, mode: str) -> Call:
    """Make (once, timed into ``case.build_s``) and return the zero-argument call of ``mode``."""
    if mode in case.calls:
        return case.calls[mode]
    start = time.perf_counter()
    call = _make_call(case, mode)
    case.build_s[mode] = time.perf_counter() - start
    case.calls[mode] = call
    return call


def _make_call(case: Case, mode: str) -> Call:
    """Return the call of ``mode`` for this case: explainers, compiled functions, recipe."""
    import keras

    import camlens

    model, x = case.model, case.x
    if mode == "forward":
        return lambda: _sync(model(x, training=False))
    if mode == "forward_compiled":
        return _compiled_forward(model, x, keras.backend.backend())
    if mode in ("gradcam", "gradcampp"):
        cls = camlens.GradCAM if mode == "gradcam" else camlens.GradCAMPlusPlus
        explainer = cls(model, layer=LAYER)
        target = _target(case.network)
        return lambda: explainer(x, target=target)
    if mode == "recipe":
        return _recipe(case)
    raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")


def _compiled_forward(model: Any, x: Any, backend: str) -> Call:
    """Return a compiled inference forward: ``tf.function`` or ``jax.jit(stateless_call)``."""
    if backend == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda t: model(t, training=False))
        return lambda: _sync(fn(x))
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def forward(tv: list[Any], ntv: list[Any], t: Any) -> Any:
            out, _ = model.stateless_call(tv, ntv, t, training=False)
            return out

        return lambda: _sync(forward(trainable, non_trainable, x))
    raise ValueError(f"no compiled forward on the {backend} backend")


def _recipe(case: Case) -> Call:
    """The hand-written eager Grad-CAM of the seed / keras.io, whole batch in one tape.

    Seed (nested): ``keras.Model(base.input, last_conv.output)``, then the head layers by hand.
    Flat classifier: the keras.io ``keras.Model(model.inputs, [layer.output, model.output])`` on
    a copy of the model built with ``classifier_activation=None`` and the same weights (keras.io
    sets ``model.layers[-1].activation = None``; the benchmark must not modify the model that
    camlens explains), so both explain the top-1 pre-softmax logit. Under the tape: forward,
    score; then gradients to the layer output, their spatial mean per image and channel, the
    weighted channel sum, ReLU and division by the maximum. The auxiliary models are built once
    here (untimed; keras.io builds its grad model on every call). Returns ``(N, h, w)`` NumPy.
    """
    import keras
    import tensorflow as tf

    model, x = case.model, case.x
    if case.network == "seed":
        base = model.get_layer("xception")
        intermediate = keras.Model(base.input, base.get_layer(LAYER).output)
        gap = model.get_layer("global_average_pooling2d_12")
        drop = model.get_layer("dropout_12")
        dense = model.get_layer("dense_12")

        def features_and_score() -> tuple[Any, Any]:
            feats = intermediate(x, training=False)
            preds = dense(drop(gap(feats), training=False))
            return feats, preds[:, 0]

    else:
        logits_model = keras.applications.Xception(weights=None, classifier_activation=None)
        logits_model.set_weights(model.get_weights())
        grad_model = keras.Model(
            logits_model.inputs, [logits_model.get_layer(LAYER).output, logits_model.output]
        )
        case.extras["recipe_model"] = logits_model

        def features_and_score() -> tuple[Any, Any]:
            feats, preds = grad_model(x, training=False)
            top = tf.argmax(preds, axis=1)
            return feats, tf.gather(preds, top, axis=1, batch_dims=1)

    def recipe() -> np.ndarray:
        with tf.GradientTape() as tape:
            feats, score = features_and_score()
        grads = tape.gradient(score, feats)
        pooled = tf.reduce_mean(grads, axis=(1, 2))
        signed = tf.einsum("nhwk,nk->nhw", feats, pooled)
        heatmap = tf.maximum(signed, 0) / tf.reduce_max(signed, axis=(1, 2), keepdims=True)
        case.extras["recipe_signed"] = signed  # kept for the agreement check
        return np.asarray(heatmap.numpy())

    return recipe


# --------------------------------------------------------------------------------------------
# Agreement of camlens with the recipe
# --------------------------------------------------------------------------------------------


def agreement(case: Case) -> dict[str, Any]:
    """Compare camlens's Grad-CAM with the recipe's on this case's batch (TensorFlow only).

    ``max_abs_diff``: largest per-pixel difference of the rectified maps at the layer's
    resolution, each min-max normalised per image; ``corr_rectified``: Pearson correlation of
    those maps; ``corr_signed``: correlation of the signed maps (``raw`` against the recipe's
    weighted sum before ReLU), which is defined even when a map is all zero after ReLU.
    """
    ours: Any = prepare(case, "gradcam")()  # a camlens.Explanation
    theirs = np.asarray(prepare(case, "recipe")(), dtype=np.float64)
    raw = np.asarray(ours.raw)
    signed = np.asarray(case.extras["recipe_signed"])
    a = minmax(np.maximum(raw, 0))
    b = minmax(np.nan_to_num(theirs))
    rows = []
    for i in range(len(a)):
        row = {
            "max_abs_diff": float(np.abs(a[i] - b[i]).max()),
            "corr_rectified": corr(a[i], b[i]),
            "corr_signed": corr(raw[i], signed[i]),
            "recipe_map_degenerate": bool(not np.isfinite(theirs[i]).all()),
        }
        rows.append(row)
    return {
        "max_abs_diff": max(r["max_abs_diff"] for r in rows),
        "min_corr_rectified": min(r["corr_rectified"] for r in rows),
        "min_corr_signed": min(r["corr_signed"] for r in rows),
        "per_image": rows,
    }


# --------------------------------------------------------------------------------------------
# Workers: timing (one process per case) and peak memory (one process per case and mode)
# --------------------------------------------------------------------------------------------


def _timed(call: Call) -> float:
    """Return the wall time of one call in seconds (after a garbage collection)."""
    gc.collect()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def time_case(network: str, batch: int, warmup: int, rounds: int) -> dict[str, Any]:
    """Time every mode of one case: first calls, then round-robin rounds; plus agreement."""
    import keras

    backend = keras.backend.backend()
    modes = modes_for(backend)
    case = make_case(network, batch)
    first: dict[str, float] = {}
    for mode in modes:  # the eager forward goes first and absorbs the framework's start-up
        first[mode] = _timed(prepare(case, mode))
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for r in range(warmup + rounds):
        order = modes[r % len(modes) :] + modes[: r % len(modes)]
        for mode in order:
            elapsed = _timed(case.calls[mode])
            if r >= warmup:
                times[mode].append(elapsed)
    return {
        "backend": backend,
        "modes": list(modes),
        "times_s": times,
        "first_call_s": first,
        "build_s": case.build_s,
        "agreement": agreement(case) if "recipe" in modes else None,
        "worker": worker_info(),
    }


def memory_case(network: str, batch: int, mode: str) -> dict[str, Any]:
    """Build, then one first (tracing) and one measured call of ``mode``; return peak RSS growth.

    As in ``gradcam_speed.py``: the baseline is the RSS once the model, the input and the mode's
    call (explainer, compiled function or recipe models) exist, and the peak mark is reset there.
    ``peak_mib`` is the peak over both calls minus that baseline; ``call_peak_mib`` the measured
    call's peak minus the RSS just before it. Peaks come from ``VmHWM``. The first call's wall
    time, in this otherwise cold process, is ``cold_first_call_s``.
    """
    case = make_case(network, batch)
    call = prepare(case, mode)
    gc.collect()
    baseline = status_kib("VmRSS")
    reset = reset_peak()
    start = time.perf_counter()
    call()
    cold = time.perf_counter() - start
    gc.collect()
    before_call = status_kib("VmRSS")
    first_peak = status_kib("VmHWM")
    reset_peak()
    call()
    call_peak = status_kib("VmHWM")
    peak = max(first_peak, call_peak)
    return {
        "baseline_rss_mib": baseline / 1024,
        "peak_mib": (peak - baseline) / 1024,
        "call_peak_mib": (call_peak - before_call) / 1024,
        "retained_after_first_call_mib": (before_call - baseline) / 1024,
        "cold_first_call_s": cold,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_reset": reset,
    }


def worker_info() -> dict[str, Any]:
    """Describe the worker's frameworks: versions, backend, thread settings."""
    import keras

    import camlens

    info: dict[str, Any] = {
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "camlens": camlens.__version__,
        "camlens_path": str(Path(camlens.__file__).parent),
        "numpy": np.__version__,
        "image_data_format": keras.config.image_data_format(),
    }
    backend = info["keras_backend"]
    if backend == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
        info["tf_inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
        info["TF_ENABLE_ONEDNN_OPTS"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    elif backend == "jax":
        import jax

        info["jax"] = jax.__version__
        info["jax_devices"] = [str(d) for d in jax.devices()]
    elif backend == "torch":
        import torch

        info["torch"] = torch.__version__
        info["torch_num_threads"] = torch.get_num_threads()
    return info


def _worker(args: list[str], backend: str) -> dict[str, Any]:
    """Run this script with ``args`` in a fresh interpreter under ``KERAS_BACKEND=backend``."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    result: dict[str, Any] = run_json(
        [__file__, "--backend", backend, *args], env=env, error_lines=5
    )
    return result


# --------------------------------------------------------------------------------------------
# Reporting (parent side)
# --------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Describe the machine (framework versions come from the workers)."""
    return {
        **host(),
    }


def _mib(value: float | None) -> str:
    """Format MiB, or ``n/a``."""
    return "n/a" if value is None else f"{value:.0f}"


def _ms(value: float | None) -> str:
    """Format seconds as whole milliseconds, or ``n/a``."""
    return "n/a" if value is None else f"{1e3 * value:.0f}"


def markdown(results: list[dict[str, Any]]) -> str:
    """Render one table per (network, batch), plus the agreement line."""
    out = []
    for res in results:
        out.append(
            f"\n**{res['network']}, batch {res['batch']}, {IMAGE_SIZE}x{IMAGE_SIZE}, "
            f"Keras on {res['backend']}**\n"
        )
        out.append(
            "| mode | median ms | min-max ms | IQR ms | time x fwd | 1st call ms "
            "| cold 1st call ms | peak MiB | mem x fwd | 2nd-call peak MiB |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        fwd_mem = res["modes"]["forward"].get("memory", {}).get("peak_mib")
        for mode, m in res["modes"].items():
            mem = m.get("memory", {})
            peak = mem.get("peak_mib")
            ratio = "" if peak is None or not fwd_mem else f"{peak / fwd_mem:.2f}"
            out.append(
                f"| {LABELS[mode]} | {1e3 * m['median_s']:.1f} "
                f"| {1e3 * m['min_s']:.1f}-{1e3 * m['max_s']:.1f} "
                f"| {1e3 * m['q1_s']:.1f}-{1e3 * m['q3_s']:.1f} "
                f"| {m['ratio_to_forward']:.2f} | {_ms(m['first_call_s'])} "
                f"| {_ms(mem.get('cold_first_call_s'))} | {_mib(peak)} | {ratio} "
                f"| {_mib(mem.get('call_peak_mib'))} |"
            )
        agree = res.get("agreement")
        if agree:
            out.append(
                f"\nAgreement with the recipe (layer resolution, min-max normalised, worst image):"
                f" max abs diff {agree['max_abs_diff']:.2e}, correlation "
                f"{agree['min_corr_rectified']:.6f} (rectified), "
                f"{agree['min_corr_signed']:.6f} (signed)."
            )
    return "\n".join(out)


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check (report, never assert) the targets on every case measured."""
    rows = []
    for res in results:
        modes = res["modes"]
        row: dict[str, Any] = {"network": res["network"], "batch": res["batch"]}
        for mode in ("gradcam", "gradcampp"):
            ratio = modes[mode]["ratio_to_forward"]
            row[f"{mode}_over_forward"] = ratio
            row[f"{mode}_forward_met"] = ratio <= TARGET_RATIO_TO_FORWARD
            if "recipe" in modes:
                speedup = modes["recipe"]["median_s"] / modes[mode]["median_s"]
                row[f"recipe_over_{mode}"] = speedup
                row[f"{mode}_recipe_met"] = speedup >= TARGET_SPEEDUP_OVER_RECIPE
        if "recipe" in modes:
            row["recipe_over_forward"] = modes["recipe"]["ratio_to_forward"]
        rows.append(row)
    return rows


def targets_markdown(checks: list[dict[str, Any]]) -> str:
    """Render the target table."""
    t1, t2 = TARGET_RATIO_TO_FORWARD, TARGET_SPEEDUP_OVER_RECIPE
    out = [
        f"\n| network | batch | GradCAM / fwd (<= {t1}) | GradCAM++ / fwd (<= {t1}) "
        f"| recipe / fwd | recipe / GradCAM (>= {t2}) | recipe / GradCAM++ (>= {t2}) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(c: dict[str, Any], value: str, met: str) -> str:
        if value not in c:
            return "n/a"
        return f"{c[value]:.2f} ({'met' if c[met] else 'MISSED'})"

    for c in checks:
        recipe = f"{c['recipe_over_forward']:.2f}" if "recipe_over_forward" in c else "n/a"
        out.append(
            f"| {c['network']} | {c['batch']} "
            f"| {cell(c, 'gradcam_over_forward', 'gradcam_forward_met')} "
            f"| {cell(c, 'gradcampp_over_forward', 'gradcampp_forward_met')} | {recipe} "
            f"| {cell(c, 'recipe_over_gradcam', 'gradcam_recipe_met')} "
            f"| {cell(c, 'recipe_over_gradcampp', 'gradcampp_recipe_met')} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line; run the benchmark, or one worker case."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=os.environ.get("KERAS_BACKEND", "tensorflow"),
        help="Keras backend of the worker processes (default: $KERAS_BACKEND or tensorflow)",
    )
    parser.add_argument("--quick", action="store_true", help="batch 1, 1+3 rounds (smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 9)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default 2)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 8")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--output", type=Path, default=None, help="JSON results path")
    parser.add_argument("--time-case", nargs=4, metavar=("NET", "BATCH", "WARMUP", "ROUNDS"))
    parser.add_argument("--memory-case", nargs=3, metavar=("NET", "BATCH", "MODE"))
    args = parser.parse_args(argv)

    if args.time_case or args.memory_case:
        # A worker: the parent set KERAS_BACKEND before this interpreter started.
        if os.environ.get("KERAS_BACKEND") != args.backend:
            raise SystemExit(f"worker needs KERAS_BACKEND={args.backend} in its environment")
        import camlens

        warnings.simplefilter("ignore", camlens.CamlensWarning)  # random weights: flat maps
        if args.time_case:
            net, batch, warmup, rounds = args.time_case
            result = time_case(net, int(batch), int(warmup), int(rounds))
        else:
            net, batch, mode = args.memory_case
            result = memory_case(net, int(batch), mode)
        print(json.dumps(result))
        return

    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 9)
    batches = args.batches or ([1] if args.quick else [1, 8])
    output = args.output or RESULTS_DIR / f"keras_speed_{args.backend}.json"
    info = machine()
    load_start = os.getloadavg()
    print(
        f"# Keras backend {args.backend}; python {info['python']}; {info['cpu_model']}, "
        f"{info['cpu_count']} cores ({info['affinity_cpus']} usable); "
        f"{warmup} warm-up + {rounds} timed rounds",
        flush=True,
    )
    results = []
    worker: dict[str, Any] = {}
    for network in args.networks:
        for batch in batches:
            t0 = time.perf_counter()
            timed = _worker(
                ["--time-case", network, str(batch), str(warmup), str(rounds)], args.backend
            )
            if "error" in timed:
                raise SystemExit(f"timing {network} batch {batch} failed: {timed['error']}")
            worker = timed["worker"]
            fwd = statistics.median(timed["times_s"]["forward"])
            modes: dict[str, Any] = {}
            for mode in timed["modes"]:
                modes[mode] = summarise(timed["times_s"][mode])
                modes[mode]["ratio_to_forward"] = modes[mode]["median_s"] / fwd
                modes[mode]["first_call_s"] = timed["first_call_s"][mode]
                modes[mode]["build_s"] = timed["build_s"][mode]
                if not args.no_memory:
                    modes[mode]["memory"] = _worker(
                        ["--memory-case", network, str(batch), mode], args.backend
                    )
            results.append(
                {
                    "network": network,
                    "batch": batch,
                    "backend": args.backend,
                    "modes": modes,
                    "agreement": timed["agreement"],
                }
            )
            print(
                f"# {network} batch {batch}: done in {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    load_end = os.getloadavg()
    checks = targets(results)
    print(
        f"# keras {worker.get('keras')}, camlens {worker.get('camlens')}, "
        + ", ".join(f"{k} {worker[k]}" for k in ("tensorflow", "jax", "torch") if k in worker)
    )
    print(markdown(results))
    print(targets_markdown(checks))
    busy = load_start[0] > 0.5 * (info["affinity_cpus"] or 1)
    print(
        f"\n# load average (1 min) {load_start[0]:.2f} at start, {load_end[0]:.2f} at end"
        + (": the machine was busy, the times are not representative" if busy else "")
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "worker": worker,
        "config": {
            "backend": args.backend,
            "warmup_rounds": warmup,
            "timed_rounds": rounds,
            "batches": batches,
            "image_size": IMAGE_SIZE,
            "layer": LAYER,
            "modes": {m: LABELS[m] for m in modes_for(args.backend)},
            "not_measured": {"tf-keras-vis": "not installed; not measured"},
        },
        "load_average_1_5_15": {"start": load_start, "end": load_end},
        "results": results,
        "targets": checks,
        "target_values": {
            "ratio_to_forward_max": TARGET_RATIO_TO_FORWARD,
            "speedup_over_recipe_min": TARGET_SPEEDUP_OVER_RECIPE,
        },
    }
    output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\n# wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
