"""Eigen-CAM."""

from __future__ import annotations

from typing import ClassVar

from camlens._types import Array
from camlens.backends._common import namespace
from camlens.methods.base import Method


def principal_projection(features: Array) -> Array:
    """Project ``(M, K, h, w)`` features on their first right singular vector, giving ``(M, h, w)``.

    Each row's features are read as an ``(h*w, K)`` matrix ``F = U S V^T``; the result is
    ``F v_1 = s_1 u_1`` reshaped to ``(h, w)``. The sign of a singular vector is arbitrary, so it is
    chosen to make each map sum to a non-negative value (for non-negative features, such as
    post-ReLU activations, this is the Perron-Frobenius choice with a non-negative map).

    Only the first singular pair is needed, so it is read from the top eigenpair of the smaller
    Gram matrix (``F F^T`` when ``h*w <= K``, the usual case at the last layer, else
    ``F^T F``) instead of a full SVD: the same vector, 10x cheaper on a 7x7x1280 layer.
    """
    xp = namespace(features)
    m, k, h, w = features.shape
    matrix = xp.permute_dims(xp.reshape(features, (m, k, h * w)), (0, 2, 1))
    transposed = xp.permute_dims(matrix, (0, 2, 1))
    if h * w <= k:
        values, vectors = xp.linalg.eigh(matrix @ transposed)  # ascending eigenvalues
        top = xp.clip(values[:, -1:], min=0.0)
        projection = vectors[:, :, -1] * xp.sqrt(top)  # s_1 u_1
    else:
        _, vectors = xp.linalg.eigh(transposed @ matrix)
        projection = xp.sum(matrix * vectors[:, :, -1][:, None, :], axis=2)  # F v_1
    sign = xp.where(xp.sum(projection, axis=1, keepdims=True) < 0, -1.0, 1.0)
    return xp.reshape(projection * xp.astype(sign, projection.dtype), (m, h, w))


class EigenCAM(Method):
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299).

    ``L = A V_1``: the activations, read as an ``(h*w, K)`` matrix, projected on their first
    principal direction (first right singular vector; no centring, as in the paper, whereas
    pytorch-grad-cam subtracts the mean first). Class-agnostic: it needs no gradient and gives
    the same map for every target.
    """

    name = "eigencam"
    needs_gradients: ClassVar[bool] = False

    def cam(self, activations: Array, gradients: Array) -> Array:
        """Return the first-principal-component projection of the activations, ``(M, h, w)``."""
        return principal_projection(activations)
