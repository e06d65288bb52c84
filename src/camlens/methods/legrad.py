"""LeGrad."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from camlens._types import Array
from camlens.backends._common import namespace
from camlens.errors import BadInputError
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

    The paper's score at layer ``l`` is that of the layer's own tokens: its block's output
    ``z_l`` passed through the model's final norm and head, ``s_l = head(norm(z_l))``, so that
    ``E_l`` measures how layer ``l``'s attention forms the prediction-relevant features there.
    Give that function as ``head`` (``lambda t: model.head(model.norm(t)[:, 0])`` for a
    class-token ViT; ``vit.classifier(vit.vit.layernorm(t)[:, 0])`` for a ``transformers``
    ViT): camlens applies it to the output tokens of the block holding each attention layer
    (the nearest module around it that returns ``(N, L, C)`` tokens) and reads the units the
    model's output resolved. Without it (the default, which needs nothing of the model's
    structure) every layer's gradient is the model's own target score's, which also flows
    through the blocks after the layer: a deviation from the paper, exact at the last layer.
    By default every block's attention layer is read (the paper's code defaults to the last
    two; pass ``layer=[...]`` for a subset).
    PyTorch and Keras models (``keras.layers.MultiHeadAttention``, every Keras backend; see
    :class:`AttentionMethod`); ONNX models are refused. On Keras, ``head`` reads the output of
    the layer or nested model around each attention layer (a block layer, a block built as a
    functional model); an attention layer in the model's own graph, in no block, refuses
    ``head`` with a :class:`camlens.MethodError` (a run of layers has no one output to read).

    Args:
        head: A function of one block's output tokens ``(N, L, C)`` (the framework's tensors)
            returning the model's output for them, or ``None`` for the model's own score.
    """

    name = "legrad"

    def __init__(self, *, head: Callable[[Any], Any] | None = None) -> None:
        """Validate and keep the per-layer head."""
        if head is not None and not callable(head):
            raise BadInputError(f"head must be a function of the tokens; got {type(head).__name__}")
        self.head = head

    def relevance(
        self, attentions: Sequence[Array], gradients: Sequence[Array] | None, prefix: int
    ) -> Array:
        """Return each token's relevance as a key, averaged over layers, ``(M, L)``."""
        assert gradients is not None
        xp = namespace(*gradients)
        per_layer = [xp.mean(xp.clip(g, min=0.0), axis=(1, 2)) for g in gradients]
        return sum(per_layer[1:], per_layer[0]) / len(per_layer)

    def __repr__(self) -> str:
        return f"LeGrad(head={self.head!r})"
