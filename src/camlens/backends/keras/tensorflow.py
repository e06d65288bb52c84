"""Gradients for Keras on TensorFlow: one ``tf.function`` per input signature.

The tape watches only the target layers' activations (``watch_accessed_variables=False``), so
nothing below them is recorded and no weight gradient is formed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from camlens.backends.keras._forward import Forward, ordered
from camlens.backends.keras._targets import Picker
from camlens.errors import LayerError

Compiled = Callable[[Any, Any, Any], tuple[list[Any], Any, Any, Any, list[Any] | None]]


def compile_probe(
    forward: Forward, scores: Picker, *, gradients: bool, required: int | None = None
) -> Compiled:
    """Return a compiled ``(x, units, signs) -> (acts, picked, units, outputs, gradients)``.

    The scores must depend on the first ``required`` layers (all by default); the gradient at
    a later layer they do not depend on is zeros.
    """
    needed = len(forward.layers) if required is None else required

    @tf.function(autograph=False)
    def probe(x: Any, units: Any, signs: Any) -> tuple[list[Any], Any, Any, Any, list[Any] | None]:
        seen: dict[int, Any] = {}
        with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:

            def tap(i: int, a: Any) -> Any:
                tape.watch(a)
                seen[i] = a
                return a

            out = forward(x, tap)
            acts = ordered(forward.layers, seen)
            signed, picked, used, flat = scores(out, units, signs)
            # Inside the tape: the per-target sums must be recorded too.
            totals = [tf.reduce_sum(signed[:, t]) for t in range(signed.shape[1])]
        if not gradients:
            return acts, picked, used, flat, None
        per_target = [tape.gradient(total, acts) for total in totals]
        for i, g in enumerate(per_target[0]):
            if g is None and i >= needed:
                for p in per_target:
                    p[i] = tf.zeros_like(acts[i])
            elif g is None:
                raise LayerError(
                    f"the target score does not depend on layer {forward.layers[i].name!r}; "
                    "pick a layer on the path to the explained output"
                )
        # (T lists of (N, ...)) -> per layer (N * T, ...), image-major rows.
        grads = [
            tf.reshape(tf.stack([g[i] for g in per_target], axis=1), (-1, *acts[i].shape[1:]))
            for i in range(len(acts))
        ]
        return acts, picked, used, flat, grads

    return probe  # type: ignore[no-any-return]


def for_maths(x: Any) -> Any:
    """Return a NumPy copy of a TensorFlow tensor: the method maths runs on NumPy here."""
    return x.numpy()


def compile_forward(forward: Forward) -> Callable[[Any], Any]:
    """Return a compiled inference-mode forward ``x -> output`` (no taps)."""

    @tf.function(autograph=False)
    def run(x: Any) -> Any:
        return forward(x, lambda i, a: a)

    return run  # type: ignore[no-any-return]
