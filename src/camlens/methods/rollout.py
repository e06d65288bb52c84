"""Attention rollout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from array_api_compat import device

from camlens._types import Array
from camlens.backends._common import namespace
from camlens.errors import BadInputError
from camlens.methods.attention import AttentionMethod

#: How the heads of a layer are fused: their mean (the paper's), maximum or minimum.
HeadFusion = Literal["mean", "max", "min"]
FUSIONS: tuple[str, ...] = ("mean", "max", "min")


class AttentionRollout(AttentionMethod):
    """Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL
    2020, arXiv:2005.00928): how much each input token flows into the class token.

    Each layer's attention maps ``A_l`` (``(heads, L, L)`` per image), fused over heads, plus
    the residual connection: ``Â_l = 0.5 fuse(A_l) + 0.5 I``, rows re-normalised to sum to 1;
    the rollout is their product from the first layer to the last, ``R = Â_L ... Â_2 Â_1``.
    The map is the class token's row of ``R`` (token 0, the first of the ``p`` prefix tokens),
    its patch tokens' entries ``R[0, p:]`` on the patch grid. A model without a
    prefix token (a mean-pooled ViT) has no class token: its map is the mean row of ``R``, the
    flow into every token at once (a camlens choice; the paper explains a class token).

    Gradient-free and independent of the target: every row of an image is the same map.
    ``head_fusion="max"`` or ``"min"`` (jacobgil/vit-explain's options) fuse heads by their
    maximum or minimum; the paper takes the mean. Layers run in the order given (the order
    the model runs them); by default every block's attention layer.
    PyTorch and Keras models (``keras.layers.MultiHeadAttention``, every Keras backend; see
    :class:`AttentionMethod`); ONNX models are refused.

    Args:
        head_fusion: ``"mean"``, ``"max"`` or ``"min"``.
    """

    name = "attentionrollout"
    needs_gradients = False

    def __init__(self, *, head_fusion: HeadFusion = "mean") -> None:
        """Validate and keep the head fusion."""
        if head_fusion not in FUSIONS:
            raise BadInputError(
                f"head_fusion must be one of {', '.join(map(repr, FUSIONS))}; got {head_fusion!r}"
            )
        self.head_fusion: HeadFusion = head_fusion

    def relevance(
        self, attentions: Sequence[Array], gradients: Sequence[Array] | None, prefix: int
    ) -> Array:
        """Return the rolled-out flow into each token, ``(M, L)``."""
        xp = namespace(*attentions)
        fuse = {"mean": xp.mean, "max": xp.max, "min": xp.min}[self.head_fusion]
        rollout = None
        for a in attentions:
            n = a.shape[-1]
            eye = xp.eye(n, dtype=a.dtype, device=device(a))
            step = 0.5 * fuse(a, axis=1) + 0.5 * eye
            step = step / xp.sum(step, axis=-1, keepdims=True)
            rollout = step if rollout is None else xp.matmul(step, rollout)
        assert rollout is not None
        return rollout[:, 0, :] if prefix else xp.mean(rollout, axis=1)

    def __repr__(self) -> str:
        return f"AttentionRollout(head_fusion={self.head_fusion!r})"
