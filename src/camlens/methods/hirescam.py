"""HiResCAM."""

from __future__ import annotations

from camlens._types import Array
from camlens.methods.base import Method


class HiResCAM(Method):
    """HiResCAM (Draelos & Carin, 2020, arXiv:2011.08891).

    ``L = ReLU(sum_k dy/dA^k ⊙ A^k)``: the gradient multiplies the activations element-wise
    instead of being averaged first, so the map reflects exactly the locations the score used.
    """

    name = "hirescam"

    def weights(self, activations: Array, gradients: Array) -> Array:
        """Return the gradients themselves as element-wise weights, ``(M, K, h, w)``."""
        return gradients
