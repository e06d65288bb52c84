"""Opti-CAM: channel weights optimised per image so that the masked input keeps its score."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
from array_api_compat import device

from camlens._checks import positive_float, positive_int
from camlens._types import Array, Size
from camlens.backends._common import namespace, to_host
from camlens.errors import MethodError
from camlens.methods.base import Method
from camlens.postprocess import bilinear_matrix

#: ``gradient(masks)``: for ``(M, H, W)`` masks, the ``(M, H, W)`` gradient of each row's
#: target score at ``x ∘ mask`` with respect to the mask.
MaskGradient = Callable[[np.ndarray], np.ndarray]

#: Adam's moment decay rates and epsilon (Kingma & Ba; PyTorch's defaults, as the official
#: code uses).
BETAS = (0.9, 0.999)
EPSILON = 1e-8


class OptiCAM(Method):
    """Opti-CAM (Zhang et al., CVIU 2024, arXiv:2301.07002): per-image optimised channel weights.

    The map is ``S = sum_k softmax(u)_k ReLU(A^k)``; its upsampled min-max scaled version
    ``M(u) = s(Up(S))`` masks the input, and ``u`` is optimised so that the masked input
    keeps the target's score: ``u* = argmax_u y(X ∘ M(u))`` (the logit of the class for a
    classifier, the raw output for :class:`camlens.Output`), by Adam from ``u = 0.5`` (uniform
    weights), as the official code does (``learning_rate=0.1``, ``iterations=50``, its
    defaults). The map is ``S(u*)``. Each row (image and target) has its own ``u``, so a batch
    equals its images one by one.

    Deviation: the official code stops early when the batch's summed loss rises at a tenth of
    the iterations; camlens runs every iteration (a row's result then never depends on the
    other images of its batch). Cost: ``iterations`` forward and backward passes through the
    whole network, on the masked inputs.

    Args:
        iterations: Adam steps.
        learning_rate: Adam's step size.
    """

    name = "opticam"
    #: The explainer gives :meth:`cam_from_mask_gradients` the gradient with respect to a mask.
    optimises_mask: ClassVar[bool] = True

    def __init__(self, *, iterations: int = 50, learning_rate: float = 0.1) -> None:
        """Validate and keep the hyper-parameters."""
        self.iterations = positive_int(iterations, "iterations")
        self.learning_rate = positive_float(learning_rate, "learning_rate")

    def cam(self, activations: Array, gradients: Array) -> Array:
        """Refuse: the map needs the model's gradients at masked inputs."""
        raise MethodError(
            f"{type(self).__name__} optimises a mask through the model: use it through an "
            "explainer (camlens.explain(..., method='opticam'))"
        )

    def cam_from_mask_gradients(
        self, activations: Array, size: Size, gradient: MaskGradient
    ) -> Array:
        """Return the ``(M, h, w)`` maps ``S(u*)``, optimising ``u`` with Adam.

        ``gradient`` reads the model (see :data:`MaskGradient`); everything else is NumPy
        arithmetic in float64 on the host.
        """
        xp = namespace(activations)
        features = np.maximum(np.asarray(to_host(activations), dtype=np.float64), 0.0)
        m, k, h, w = features.shape
        rows = bilinear_matrix(size[0], h)  # (H, h)
        cols = bilinear_matrix(size[1], w)  # (W, w)
        u = np.full((m, k), 0.5)
        first = np.zeros_like(u)
        second = np.zeros_like(u)
        beta1, beta2 = BETAS
        for step in range(1, self.iterations + 1):
            alpha = _softmax(u)
            small = np.einsum("mk,mkhw->mhw", alpha, features)
            mask, back = _mask_and_backward(small, rows, cols)
            ascent = back(gradient(mask.astype(np.float32)).astype(np.float64))  # dy/dS
            d_alpha = np.einsum("mhw,mkhw->mk", ascent, features)
            d_u = alpha * (d_alpha - (alpha * d_alpha).sum(axis=1, keepdims=True))
            loss_gradient = -d_u  # the loss is y(X) - y(X ∘ M(u))
            first = beta1 * first + (1 - beta1) * loss_gradient
            second = beta2 * second + (1 - beta2) * loss_gradient**2
            corrected = first / (1 - beta1**step)
            scale = np.sqrt(second / (1 - beta2**step)) + EPSILON
            u = u - self.learning_rate * corrected / scale
        final = np.einsum("mk,mkhw->mhw", _softmax(u), features)
        dtype = activations.dtype
        return xp.asarray(final.astype(np.float32), dtype=dtype, device=device(activations))

    def __repr__(self) -> str:
        return f"OptiCAM(iterations={self.iterations}, learning_rate={self.learning_rate})"


def _softmax(u: np.ndarray) -> np.ndarray:
    """Return the softmax of each row of ``u``."""
    e = np.exp(u - u.max(axis=1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def _mask_and_backward(
    small: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Return ``M = s(Up(S))`` for ``(M, h, w)`` maps ``S``, and the map from ``dy/dM`` to
    ``dy/dS`` (a constant map gives an all-zero mask and a zero gradient)."""
    up = np.einsum("Hh,mhw,Ww->mHW", rows, small, cols)
    flat = up.reshape(up.shape[0], -1)
    low_at, high_at = flat.argmin(axis=1), flat.argmax(axis=1)
    picked = np.arange(flat.shape[0])
    low, high = flat[picked, low_at], flat[picked, high_at]
    span = high - low
    live = span > 0
    safe = np.where(live, span, 1.0)
    mask = np.where(live[:, None], (flat - low[:, None]) / safe[:, None], 0.0)

    def backward(d_mask: np.ndarray) -> np.ndarray:
        g = d_mask.reshape(flat.shape)
        total, along = g.sum(axis=1), (g * mask).sum(axis=1)
        d_up = g / safe[:, None]
        d_up[picked, low_at] += (along - total) / safe  # through the minimum
        d_up[picked, high_at] -= along / safe  # through the maximum
        d_up[~live] = 0.0
        d_small: np.ndarray = np.einsum("Hh,mHW,Ww->mhw", rows, d_up.reshape(up.shape), cols)
        return d_small

    return mask.reshape(up.shape), backward
