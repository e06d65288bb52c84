"""LayerCAM."""

from __future__ import annotations

from camlens._types import Array
from camlens.backends._common import namespace
from camlens.methods.base import Method


class LayerCAM(Method):
    """LayerCAM (Jiang et al., IEEE TIP 2021, doi:10.1109/TIP.2021.3089943).

    ``L = ReLU(sum_k ReLU(dy/dA^k) ⊙ A^k)``: each location is weighted by its own positive
    gradient, which keeps fine detail in shallow layers.
    """

    name = "layercam"

    def weights(self, activations: Array, gradients: Array) -> Array:
        """Return the rectified gradients as element-wise weights, ``(M, K, h, w)``."""
        xp = namespace(gradients)
        return xp.clip(gradients, min=0.0)
