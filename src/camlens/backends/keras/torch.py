"""Gradients for Keras on PyTorch: eager autograd, the graph starting at the target layers.

The forward runs without autograd until the first target layer, where recording starts on a
detached copy of its output; ``torch.autograd.grad`` asks only for the activations' gradients
(and, for Hessian-vector products, differentiates them again: the PyTorch backend's
``hessian_products``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from camlens.backends.base import LayerRef
from camlens.backends.keras._forward import Compiled, Forward, Outputs, ordered
from camlens.backends.keras._targets import Picker
from camlens.backends.torch import batched_gradients, hessian_products
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
    """Return ``(x, units, signs) -> (activations, picked, units, outputs, gradients,
    hessian_products)`` (eager); ``hessian``: the products ``H A``, else ``None``.

    The scores must depend on the first ``required`` layers (all by default); the gradient at
    a later layer they do not depend on is zeros. ``per_layer``: the scores are ``(layers, N,
    T)``, each layer's gradient that of its own scores (LeGrad's per-block scores).
    """
    needed = len(forward.layers) if required is None else required
    layers: list[LayerRef] = list(forward.layers)[:needed]

    def probe(x: Any, units: Any, signs: Any) -> Outputs:
        seen: dict[int, Any] = {}

        def tap(i: int, a: Any) -> Any:
            if gradients:
                torch.set_grad_enabled(True)
                a = a if a.requires_grad else a.detach().requires_grad_(True)
            seen[i] = a
            return a

        # Leaving the no_grad block restores the caller's grad mode, whatever the tap set.
        with torch.inference_mode(False), torch.no_grad():
            out = forward(x, tap)
            acts = ordered(forward.layers, seen)
            signed, picked, used, flat = scores(out, units, signs)
            products = None
            grads: list[Any] | None
            if hessian:
                grads, products = hessian_products(signed, acts, layers)
            elif gradients and per_layer:
                grads = _own_gradients(signed, acts, layers)
            elif gradients:
                grads = batched_gradients(signed, acts[:needed], layers, acts[needed:])
            else:
                grads = None
        return [a.detach() for a in acts], picked.detach(), used, flat.detach(), grads, products

    return probe


def _own_gradients(signed: Any, acts: list[Any], layers: list[LayerRef]) -> list[Any]:
    """Return each layer's gradient of its own scores ``signed[i]`` ``(N, T)``, as
    ``(N * T, ...)`` image-major rows (the layers' scores share one graph: it is kept)."""
    grads = []
    for own, a, ref in zip(signed, acts, layers, strict=True):
        per_target = [
            torch.autograd.grad(own[:, j].sum(), a, retain_graph=True, allow_unused=True)[0]
            if own.requires_grad
            else None
            for j in range(own.shape[1])
        ]
        found = [g for g in per_target if g is not None]
        if len(found) < len(per_target):
            raise LayerError(
                f"the block's own score does not depend on the attention maps of layer "
                f"{ref.name!r}; check head= (it must read the block's tokens)"
            )
        grads.append(torch.stack(found, dim=1).reshape(-1, *a.shape[1:]))
    return grads


def for_maths(x: Any) -> Any:
    """Return a torch tensor as it is: the method maths runs on it through the array API."""
    return x


def compile_forward(forward: Forward) -> Callable[[Any], Any]:
    """Return an inference-mode forward ``x -> output`` (no taps; eager on torch)."""

    def run(x: Any) -> Any:
        with torch.inference_mode():
            return forward(x, lambda i, a: a)

    return run
