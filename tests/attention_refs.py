"""References for the attention methods, from the papers' formulas (NumPy only)."""

from __future__ import annotations

import numpy as np


def rollout_reference(
    attentions: list[np.ndarray], prefix: int, grid: tuple[int, int]
) -> np.ndarray:
    """Abnar & Zuidema: ``R = prod_l norm(0.5 mean_heads(A_l) + 0.5 I)``, the class token's row
    (the mean row without a prefix token), patch tokens on the grid."""
    n, _, tokens, _ = attentions[0].shape
    eye = np.eye(tokens)
    rollout = np.broadcast_to(eye, (n, tokens, tokens))
    for a in attentions:
        step = 0.5 * a.astype(np.float64).mean(axis=1) + 0.5 * eye
        step = step / step.sum(axis=-1, keepdims=True)
        rollout = step @ rollout
    row = rollout[:, 0] if prefix else rollout.mean(axis=1)
    return row[:, prefix:].reshape(n, *grid)
