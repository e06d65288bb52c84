"""Ablation-CAM."""

from __future__ import annotations

import numpy as np

from camlens._types import Array
from camlens.backends._common import to_host
from camlens.methods.perturbation import Forwards, PerturbationMethod


class AblationCAM(PerturbationMethod):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020, doi:10.1109/WACV45572.2020.9093360).

    Each channel's weight is the relative drop of the target score when that channel of the
    layer is set to zero: ``w_k = (y_c - y_c^k) / y_c``, ``L = ReLU(sum_k w_k A^k)``, with raw
    scores (``score_mode="raw"``, the paper's class score before softmax) by default. Where
    ``y_c = 0`` exactly, the weights are 0 (the ratio is undefined).

    Only the part of the network after the layer is re-run when the backend can isolate it
    (torch.fx-traceable PyTorch models, Keras functional graphs); otherwise the full network
    runs with the layer's output replaced. Exact shortcut: ablating an all-zero channel changes
    nothing, so its weight is 0 without a forward pass.

    Args:
        batch_size, score_mode, progress: See :class:`PerturbationMethod`.
    """

    name = "ablationcam"
    default_score_mode = "raw"

    def channel_weights(self, activations: Array, forwards: Forwards) -> np.ndarray:
        """Return ``(M, K)`` weights ``w_k``: the relative score drop when ``A^k`` is zeroed."""
        t = forwards.targets_per_image
        k = activations.shape[1]
        firsts = [to_host(activations[n * t]) for n in range(forwards.n_images)]
        live = [np.flatnonzero(np.abs(a.reshape(k, -1)).max(axis=1) > 0) for a in firsts]
        forwards.plan(sum(len(c) for c in live))
        base = forwards.unperturbed()  # (N, T)
        ablated = forwards.ablated(activations, live)
        weights = np.zeros((forwards.n_images, t, k))
        for n, (c, s) in enumerate(zip(live, ablated, strict=True)):
            y = base[n][:, None]  # (T, 1)
            drop = y - s.T  # (T, C)
            with np.errstate(divide="ignore", invalid="ignore"):
                weights[n][:, c] = np.where(y != 0, drop / np.where(y != 0, y, 1.0), 0.0)
        return weights.reshape(-1, k)
