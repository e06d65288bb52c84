"""Gradients for Keras on TensorFlow: one ``tf.function`` per input signature.

The tape watches only the target layers' activations (``watch_accessed_variables=False``), so
nothing below them is recorded and no weight gradient is formed. Hessian-vector products nest
that tape in a second one, which records the first backward pass; each layer's gradient is
then differentiated alone.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import tensorflow as tf

from camlens.backends.keras._forward import Compiled, Forward, Outputs, ordered
from camlens.backends.keras._targets import Picker
from camlens.errors import LayerError


def compile_probe(
    forward: Forward,
    scores: Picker,
    *,
    gradients: bool,
    required: int | None = None,
    hessian: bool = False,
    per_layer: bool = False,
) -> Compiled:
    """Return a compiled ``(x, units, signs) -> (acts, picked, units, outputs, gradients,
    hessian_products)``; ``hessian``: the products ``H A`` of each row's score, else ``None``.

    The scores must depend on the first ``required`` layers (all by default); the gradient at
    a later layer they do not depend on is zeros. ``per_layer``: the scores are ``(layers, N,
    T)``, each layer's gradient that of its own scores (LeGrad's per-block scores).
    """
    needed = len(forward.layers) if required is None else required

    @tf.function(autograph=False)
    def probe(x: Any, units: Any, signs: Any) -> Outputs:
        seen: dict[int, Any] = {}
        outer = tf.GradientTape(persistent=True, watch_accessed_variables=False)
        with outer if hessian else nullcontext():
            with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:

                def tap(i: int, a: Any) -> Any:
                    tape.watch(a)
                    if hessian:
                        outer.watch(a)
                    seen[i] = a
                    return a

                out = forward(x, tap)
                acts = ordered(forward.layers, seen)
                signed, picked, used, flat = scores(out, units, signs)
                # Inside the tape: the per-target sums must be recorded too.
                targets = range(signed.shape[-1])
                if per_layer:  # per target, each layer's own total
                    totals: list[Any] = [
                        [tf.reduce_sum(signed[i][:, t]) for i in range(len(acts))] for t in targets
                    ]
                else:
                    totals = [tf.reduce_sum(signed[:, t]) for t in targets]
            if not gradients:
                return acts, picked, used, flat, None, None
            # Inside the outer tape (when there is one): it records this backward pass.
            per_target = [
                [tape.gradient(own, a) for own, a in zip(total, acts, strict=True)]
                if per_layer
                else tape.gradient(total, acts)
                for total in totals
            ]
        for i, g in enumerate(per_target[0]):
            if g is None and i >= needed:
                for p in per_target:
                    p[i] = tf.zeros_like(acts[i])
            elif g is None:
                raise LayerError(
                    f"the target score does not depend on layer {forward.layers[i].name!r}; "
                    "pick a layer on the path to the explained output"
                )
        grads = _rows(per_target, acts)
        if not hessian:
            return acts, picked, used, flat, grads, None
        # One product per layer: H_ii A_i alone, not the cross terms of nested layers.
        products = [
            [_product(outer, gi, a) for gi, a in zip(g, acts, strict=True)] for g in per_target
        ]
        return acts, picked, used, flat, grads, _rows(products, acts)

    return probe  # type: ignore[no-any-return]


def _product(tape: tf.GradientTape, gradient: Any, act: Any) -> Any:
    """Return ``d(gradient . act) / d act`` with ``act`` constant in the product: ``H A``."""
    direction = tf.stop_gradient(act)
    found = tape.gradient(gradient, act, output_gradients=direction)
    return tf.zeros_like(direction) if found is None else found


def _rows(per_target: list[list[Any]], acts: list[Any]) -> list[Any]:
    """Return T lists of ``(N, ...)`` per layer as ``(N * T, ...)``, image-major rows."""
    return [
        tf.reshape(tf.stack([g[i] for g in per_target], axis=1), (-1, *acts[i].shape[1:]))
        for i in range(len(acts))
    ]


def for_maths(x: Any) -> Any:
    """Return a NumPy copy of a TensorFlow tensor: the method maths runs on NumPy here."""
    return x.numpy()


def compile_forward(forward: Forward) -> Callable[[Any], Any]:
    """Return a compiled inference-mode forward ``x -> output`` (no taps)."""

    @tf.function(autograph=False)
    def run(x: Any) -> Any:
        return forward(x, lambda i, a: a)

    return run  # type: ignore[no-any-return]
