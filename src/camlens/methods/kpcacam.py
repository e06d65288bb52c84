"""KPCA-CAM: Eigen-CAM with kernel principal component analysis."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from camlens._types import Array
from camlens.backends._common import namespace
from camlens.errors import BadInputError
from camlens.methods.base import Method

KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


class KPCACAM(Method):
    """KPCA-CAM (Karmani et al., MMSP 2024, arXiv:2410.00267).

    The activations, read as ``h*w`` points ``x_i`` in ``R^K`` and centred, are projected on
    their first kernel principal component: with the kernel matrix ``K_ij = k(x_i, x_j)``
    centred in feature space, ``Kc = H K H`` (``H = I - 1/n``), and its top eigenpair
    ``(lambda, v)``, the map is ``L_i = sqrt(lambda) v_i`` (the component's value at point
    ``i``, as scikit-learn's ``KernelPCA.fit_transform`` gives it). Kernels, as scikit-learn
    defines them: ``sigmoid`` ``tanh(gamma x.y + c0)`` (the default, as the paper's code),
    ``rbf`` ``exp(-gamma |x - y|^2)``, ``poly`` ``(gamma x.y + c0)^degree``, ``linear`` and
    ``cosine``; ``gamma`` defaults to ``1/K``. Class-agnostic, like Eigen-CAM: no gradient.

    The sign of an eigenvector is arbitrary (and a centred component sums to zero, so
    Eigen-CAM's rule cannot fix it): it is chosen so that the map correlates positively with
    the channel sum ``sum_k A^k``, so strong activations come out positive. pytorch-grad-cam
    keeps scikit-learn's rule (largest magnitude positive), which can flip a map.

    Cost: one ``(h*w) x (h*w)`` eigendecomposition per row, fine at a 7x7 or 14x14 layer,
    slow at 56x56.

    Args:
        kernel: One of ``sigmoid``, ``rbf``, ``poly``, ``linear``, ``cosine``.
        gamma: The kernel's scale; ``None`` is ``1 / channels``.
        coef0: The constant of the ``sigmoid`` and ``poly`` kernels (scikit-learn's 1).
        degree: The ``poly`` kernel's degree.
    """

    name = "kpcacam"
    needs_gradients: ClassVar[bool] = False

    def __init__(
        self,
        *,
        kernel: str = "sigmoid",
        gamma: float | None = None,
        coef0: float = 1.0,
        degree: int = 3,
    ) -> None:
        """Validate and keep the kernel and its parameters."""
        if kernel not in KERNELS:
            raise BadInputError(f"kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")
        if gamma is not None and not (_is_number(gamma) and gamma > 0):
            raise BadInputError(f"gamma must be a positive number or None; got {gamma!r}")
        if not _is_number(coef0):
            raise BadInputError(f"coef0 must be a finite number; got {coef0!r}")
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
            raise BadInputError(f"degree must be a positive int; got {degree!r}")
        self.kernel = kernel
        self.gamma = None if gamma is None else float(gamma)
        self.coef0 = float(coef0)
        self.degree = degree

    def cam(self, activations: Array, gradients: Array) -> Array:
        """Return each row's first kernel principal component, ``(M, h, w)``."""
        xp = namespace(activations)
        m, k, h, w = activations.shape
        points = xp.permute_dims(xp.reshape(activations, (m, k, h * w)), (0, 2, 1))  # (M, n, K)
        points = points - xp.mean(points, axis=1, keepdims=True)
        matrix = self._kernel(xp, points)
        matrix = (
            matrix
            - xp.mean(matrix, axis=1, keepdims=True)
            - xp.mean(matrix, axis=2, keepdims=True)
            + xp.mean(matrix, axis=(1, 2), keepdims=True)
        )
        values, vectors = xp.linalg.eigh(matrix)  # ascending eigenvalues
        projection = vectors[:, :, -1] * xp.sqrt(xp.clip(values[:, -1:], min=0.0))
        energy = xp.reshape(xp.sum(activations, axis=1), (m, h * w))
        sign = xp.where(xp.sum(projection * energy, axis=1, keepdims=True) < 0, -1.0, 1.0)
        return xp.reshape(projection * xp.astype(sign, projection.dtype), (m, h, w))

    def _kernel(self, xp: Any, points: Array) -> Array:
        """Return the ``(M, n, n)`` kernel matrix of the centred ``(M, n, K)`` points."""
        gamma = self.gamma if self.gamma is not None else 1.0 / points.shape[2]
        gram = points @ xp.permute_dims(points, (0, 2, 1))
        if self.kernel == "linear":
            return gram
        if self.kernel == "sigmoid":
            return xp.tanh(gamma * gram + self.coef0)
        if self.kernel == "poly":
            return (gamma * gram + self.coef0) ** self.degree
        norms = xp.sum(points * points, axis=2)  # |x_i|^2, (M, n)
        if self.kernel == "rbf":
            distances = xp.clip(norms[:, :, None] + norms[:, None, :] - 2 * gram, min=0.0)
            return xp.exp(-gamma * distances)
        product = xp.sqrt(norms[:, :, None] * norms[:, None, :])  # cosine
        zero = product == 0
        return xp.where(zero, xp.zeros_like(gram), gram / xp.where(zero, 1.0, product))

    def __repr__(self) -> str:
        return (
            f"KPCACAM(kernel={self.kernel!r}, gamma={self.gamma}, coef0={self.coef0}, "
            f"degree={self.degree})"
        )


def _is_number(value: object) -> bool:
    """Return whether ``value`` is a finite real number (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
