"""Gradients for Keras on JAX: one ``jax.jit`` per input signature, weights passed as arguments.

A zero perturbation is added to each target layer's output and the scores are differentiated
with respect to it, which is the gradient with respect to the activations; XLA keeps only the
part of the backward pass after the layers. Several targets per image use one ``vmap`` over
the cotangents of a single ``vjp``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import keras

from camlens.backends.keras._forward import Compiled, Forward, Outputs, ordered
from camlens.backends.keras._targets import Picker


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

    ``required`` is the tensorflow module's; here a layer the scores do not depend on simply
    gets zeros. ``per_layer``: the scores are ``(layers, N, T)``, each layer's gradient that
    of its own scores (LeGrad's per-block scores).
    """
    variables = list(forward.model.variables)

    def stateless(values: list[Any], fn: Callable[[], Any]) -> Any:
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            return fn()

    def run(values: list[Any], x: Any, deltas: list[Any] | None) -> tuple[Any, list[Any]]:
        seen: dict[int, Any] = {}

        def tap(i: int, a: Any) -> Any:
            seen[i] = a
            return a if deltas is None else a + deltas[i]

        out = stateless(values, lambda: forward(x, tap))
        return out, ordered(forward.layers, seen)

    @jax.jit
    def probe(values: list[Any], x: Any, units: Any, signs: Any) -> Outputs:
        if not gradients:
            out, acts = run(values, x, None)
            _, picked, used, flat = scores(out, units, signs)
            return acts, picked, used, flat, None, None
        shapes = jax.eval_shape(lambda: run(values, x, None)[1])
        zeros = [jnp.zeros(s.shape, s.dtype) for s in shapes]

        def signed_scores(deltas: list[Any]) -> tuple[Any, tuple[list[Any], Any, Any, Any]]:
            out, acts = run(values, x, deltas)
            signed, picked, used, flat = scores(out, units, signs)
            return signed, (acts, picked, used, flat)

        def gradient(deltas: list[Any]) -> tuple[list[Any], tuple[list[Any], Any, Any, Any]]:
            signed, pullback, aux = jax.vjp(signed_scores, deltas, has_aux=True)
            t = signed.shape[-1]
            if per_layer:  # one cotangent per (layer, target), signed (L, N, T)
                layers = signed.shape[0]
                eye = jnp.eye(layers * t, dtype=signed.dtype).reshape(layers * t, layers, 1, t)
                (every,) = jax.vmap(pullback)(jnp.broadcast_to(eye, (layers * t, *signed.shape)))
                return [g[i * t : (i + 1) * t] for i, g in enumerate(every)], aux
            cotangents = jnp.broadcast_to(
                jnp.eye(t, dtype=signed.dtype)[:, None, :], (t, *signed.shape)
            )
            (per_target,) = jax.vmap(pullback)(cotangents)  # per layer (T, N, ...)
            return per_target, aux

        per_target, (acts, picked, used, flat) = gradient(zeros)
        if not hessian:
            return acts, picked, used, flat, _rows(per_target), None
        # One jvp per layer, along its activations only: H_ii A_i, not the cross terms of
        # nested layers.
        directions = [jax.lax.stop_gradient(a) for a in acts]
        products = []
        for i, direction in enumerate(directions):
            tangent = [direction if k == i else jnp.zeros_like(z) for k, z in enumerate(zeros)]
            _, along, _ = jax.jvp(gradient, (zeros,), (tangent,), has_aux=True)
            products.append(along[i])
        return acts, picked, used, flat, _rows(per_target), _rows(products)

    def call(x: Any, units: Any, signs: Any) -> Outputs:
        return probe([v.value for v in variables], x, units, signs)  # type: ignore[no-any-return]

    return call


def _rows(per_target: list[Any]) -> list[Any]:
    """Return ``(T, N, ...)`` per layer as ``(N * T, ...)``, image-major rows."""
    return [jnp.reshape(jnp.swapaxes(g, 0, 1), (-1, *g.shape[2:])) for g in per_target]


def for_maths(x: Any) -> Any:
    """Return a JAX array as it is: the method maths runs on it through the array API."""
    return x


def compile_forward(forward: Forward) -> Callable[[Any], Any]:
    """Return a compiled inference-mode forward ``x -> output`` (no taps)."""
    variables = list(forward.model.variables)

    @jax.jit
    def run(values: list[Any], x: Any) -> Any:
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            return forward(x, lambda i, a: a)

    return lambda x: run([v.value for v in variables], x)
