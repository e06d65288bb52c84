"""Deep Feature Factorization: non-negative matrix factorisation of a layer's activations."""

from __future__ import annotations

import numpy as np
from array_api_compat import device

from camlens._types import Array
from camlens.backends._common import namespace


def _update(factor: Array, num: Array, den: Array) -> Array:
    """Return ``factor * num / den``, 0 where ``den`` is exactly 0 (no epsilon)."""
    xp = namespace(factor, num, den)
    zero = den == 0
    return xp.where(zero, xp.zeros_like(factor), factor * num / xp.where(zero, 1.0, den))


def nmf(matrix: Array, k: int, *, iterations: int, seed: int) -> tuple[Array, Array]:
    """Factorise a non-negative ``(K, P)`` matrix as ``V ≈ W H``, ``W (K, k)``, ``H (k, P)``.

    Lee & Seung's multiplicative updates for the Frobenius error (NIPS 2000), which never
    increase it: ``H <- H (W^T V) / (W^T W H)``, then ``W <- W (V H^T) / (W H H^T)``, a fixed
    number of times. Initialised as scikit-learn's ``init="random"``: uniform draws from
    ``seed`` scaled by ``sqrt(mean(V) / k)``. Runs where the matrix lives.
    """
    xp = namespace(matrix)
    rows, cols = matrix.shape
    rng = np.random.default_rng(seed)
    scale = float(np.sqrt(max(float(xp.mean(matrix)), 0.0) / k))
    dev = device(matrix)
    w = xp.asarray(scale * rng.random((rows, k)), dtype=matrix.dtype, device=dev)
    h = xp.asarray(scale * rng.random((k, cols)), dtype=matrix.dtype, device=dev)
    for _ in range(iterations):
        wt = xp.permute_dims(w, (1, 0))
        h = _update(h, wt @ matrix, (wt @ w) @ h)
        ht = xp.permute_dims(h, (1, 0))
        w = _update(w, matrix @ ht, w @ (h @ ht))
    return w, h
