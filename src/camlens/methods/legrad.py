"""LeGrad."""

from __future__ import annotations

from collections.abc import Sequence

from camlens._types import Array
from camlens.backends._common import namespace
from camlens.methods.attention import AttentionMethod


class LeGrad(AttentionMethod):
    """LeGrad (Bousselham et al., "LeGrad: An Explainability Method for Vision Transformers via
    Feature Formation Sensitivity", 2024, arXiv:2404.03214): the sensitivity of the score to
    each layer's attention maps.

    At each layer ``l``, the gradient of the target score ``s`` with respect to the attention
    maps ``A_l`` (``(heads, L, L)`` per image), rectified and averaged over heads and query
    tokens, gives each key token's relevance ``E_l = mean_{h,i} ReLU(ds/dA_l[h, i, :])``; the map
    is their mean over layers on the patch grid, prefix tokens dropped:
    ``L = mean_l E_l[p:]`` (the paper sums; the mean is the sum scaled, the same after
    normalisation). The attention values themselves are not multiplied in.

    Deviation: the paper (and its code) reads, at each layer, the score of that layer's own
    tokens passed through the model's final norm and head (``s_l = head(norm(z_l))``); camlens
    differentiates the model's own target score at every layer (it explains any model and any
    target without knowing its head), so a layer's gradient also flows through the blocks
    after it. By default every block's attention layer is read (the paper's code defaults to
    the last two; pass ``layer=[...]`` for a subset).
    """

    name = "legrad"

    def relevance(
        self, attentions: Sequence[Array], gradients: Sequence[Array] | None, prefix: int
    ) -> Array:
        """Return each token's relevance as a key, averaged over layers, ``(M, L)``."""
        assert gradients is not None
        xp = namespace(*gradients)
        per_layer = [xp.mean(xp.clip(g, min=0.0), axis=(1, 2)) for g in gradients]
        return sum(per_layer[1:], per_layer[0]) / len(per_layer)
