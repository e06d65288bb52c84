"""The contract of attention methods: maths on a transformer's attention maps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from camlens._types import Array
from camlens.backends._common import namespace
from camlens.backends._layout import Layout
from camlens.methods.base import Method


class AttentionMethod(Method):
    """Base class of methods that read attention maps instead of a layer's activations.

    Their layers are attention layers: each block's attention probabilities ``A``,
    ``(M, heads, L, L)`` (row ``i`` of a head: how query token ``i`` attends to every key
    token), found automatically or given as ``layer=[...]`` in the order the model runs them.
    The backend captures them (and, if :attr:`needs_gradients`, the gradients of each row's score
    with respect to them) and says how the ``L`` tokens lie on the image grid (``prefix``
    tokens, then the patch grid row by row: the token grid inference of token layers, with
    ``grid=`` where the count does not tell it). A subclass turns them into one relevance per
    token, :meth:`relevance`; the patch tokens' are the map.

    Attention maps are captured from PyTorch and Keras models. On Keras, the attention layers
    are the ``keras.layers.MultiHeadAttention`` layers (nested ones too), which compute their
    probabilities inside their call: for the probe's pass camlens computes each layer's
    attention through the layer's own explicit path (its projections, masked softmax and
    combine equation; never the fused or flash kernel, which forms no probabilities), with
    the probabilities exposed to the probe and, for the gradient, a differentiable tap on
    them, on TensorFlow, JAX and PyTorch alike; the model's weights, flags and output are
    unchanged. ONNX models are refused with a :class:`camlens.MethodError`: an ONNX graph
    gives no gradients, and its attention probabilities are unnamed tensors inside it.

    Attributes:
        reads_attention: Marks the method for the explainer, which probes attention maps.
    """

    reads_attention: ClassVar[bool] = True

    def relevance(
        self, attentions: Sequence[Array], gradients: Sequence[Array] | None, prefix: int
    ) -> Array:
        """Return each row's relevance of every token, ``(M, L)``, prefix tokens included."""
        raise NotImplementedError(f"{type(self).__name__} must override relevance()")

    def cam_from_attention(
        self, attentions: Sequence[Array], gradients: Sequence[Array] | None, tokens: Layout
    ) -> Array:
        """Return the signed ``(M, h, w)`` map: the patch tokens' relevance on their grid."""
        xp = namespace(*attentions)
        scores = self.relevance(attentions, gradients, tokens.prefix)
        return tokens.to_grid(xp.reshape(scores, (*scores.shape, 1)), xp, "attention")[:, 0]

    def cam(self, activations: Array, gradients: Array) -> Array:
        """Refuse a single layer's activations: the explainer passes attention maps instead."""
        raise NotImplementedError(
            f"{type(self).__name__} reads attention maps: use cam_from_attention()"
        )
