"""Attention maps of a Keras transformer: each ``keras.layers.MultiHeadAttention``'s
probabilities, tapped inside its call, for one pass.

``MultiHeadAttention`` computes its probabilities inside its call (``_compute_attention``) and
returns them only when its caller asks (``return_attention_scores=True``); on its fused path
(``ops.dot_product_attention``, flash attention where enabled) it never forms them at all. For
the pass, each attention layer's ``_compute_attention`` is replaced (an attribute of the
instance, deleted in ``finally``, acting only in the calling thread) by the layer's own
explicit path, written with its own parts: the query scaled by ``1 / sqrt(key_dim)``, its dot
product equation, its masked softmax (the causal mask too), its dropout (inactive: probes run
in inference) and its combine equation. The probabilities ``softmax(q k^T / sqrt(d))`` are
handed to the probe's tap, and what the tap returns is what the layer multiplies into the
values: a watched tensor on TensorFlow, the probabilities plus a zero offset on JAX, a tensor
recording history on torch, so the gradient at the tap is the gradient with respect to the
probabilities on every backend. The rest of the layer's call (projections, masks from the
inputs, gate, output projection) is its own; no weight or flag is touched.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import keras
from keras import ops

from camlens.backends.base import LayerRef, model_inputs, rows
from camlens.backends.keras._graph import iter_layers, run
from camlens.errors import LayerError, MethodError

#: The parts of ``MultiHeadAttention`` the explicit path is written with.
PARTS = (
    "_inverse_sqrt_key_dim",
    "_dot_product_equation",
    "_combine_equation",
    "_masked_softmax",
    "_compute_causal_mask",
    "_dropout",
    "_dropout_layer",
)

Tap = Callable[[Any], Any]


def is_attention(layer: Any) -> bool:
    """Return whether ``layer`` is a ``keras.layers.MultiHeadAttention`` (or a subclass)."""
    return isinstance(layer, keras.layers.MultiHeadAttention)


def check_layers(layers: Sequence[LayerRef]) -> None:
    """Refuse layers that are not ``MultiHeadAttention`` layers camlens can tap, or one given
    twice."""
    for i, ref in enumerate(layers):
        layer = ref.handle
        if any(other.handle is layer for other in layers[:i]):
            raise LayerError(
                f"layer {ref.name!r} is given twice; pass each block's attention layer once"
            )
        if not is_attention(layer):
            raise LayerError(
                f"layer {ref.name!r} is a {type(layer).__name__}, not a "
                "keras.layers.MultiHeadAttention: attention methods read the probabilities of "
                "MultiHeadAttention layers; pass those (or no layer=, to find them all)"
            )
        own = type(layer)._compute_attention
        if own is not keras.layers.MultiHeadAttention._compute_attention:
            raise LayerError(
                f"layer {ref.name!r} is a {type(layer).__name__} with its own "
                "_compute_attention, whose probabilities camlens cannot see; pass plain "
                "MultiHeadAttention layers"
            )
        missing = [part for part in PARTS if not hasattr(layer, part)]
        if missing or "_compute_attention" in vars(layer):
            raise MethodError(
                f"layer {ref.name!r}: this Keras version's MultiHeadAttention lacks "
                f"{missing or 'a replaceable _compute_attention'}, from which camlens computes "
                f"its probabilities (Keras {keras.__version__}); use Keras 3.6 or later"
            )


@contextmanager
def tapped(
    layers: Sequence[LayerRef], taps: Sequence[Tap], *, once: bool = True
) -> Iterator[list[int]]:
    """Tap the attention probabilities of each layer for the ``with`` block.

    ``taps[i]`` sees layer ``i``'s probabilities ``(N, heads, L, L)`` and returns what the
    layer multiplies into its values. Yields the indices of the layers, one per call, in the
    order they ran.

    Raises:
        LayerError: With ``once``, a layer is called more than once in the pass (shared).
    """
    check_layers(layers)
    owner = threading.get_ident()
    order: list[int] = []
    patched: list[Any] = []
    try:
        for index, ref in enumerate(layers):

            def attend(*args: Any, _i: int = index, _ref: LayerRef = ref, **kw: Any) -> Any:
                layer = _ref.handle
                if threading.get_ident() != owner:
                    return type(layer)._compute_attention(layer, *args, **kw)
                if once and _i in order:
                    raise LayerError(
                        f"layer {_ref.name!r} is called more than once in one forward pass (a "
                        "shared layer); pass the attention layer of each block"
                    )
                order.append(_i)
                return _explicit(layer, taps[_i], *args, **kw)

            ref.handle._compute_attention = attend
            patched.append(ref.handle)
        yield order
    finally:
        for layer in patched:
            del layer._compute_attention  # the instance attribute; the class's shows through


def _explicit(
    layer: Any,
    tap: Tap,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any = None,
    training: Any = None,
    return_attention_scores: bool = False,
    use_causal_mask: bool = False,
) -> tuple[Any, Any]:
    """``MultiHeadAttention._compute_attention``'s explicit path, its probabilities tapped."""
    if use_causal_mask:
        causal = layer._compute_causal_mask(query, value)
        attention_mask = (
            causal
            if attention_mask is None
            else ops.logical_and(ops.cast(attention_mask, "bool"), causal)
        )
    query = ops.multiply(query, ops.cast(layer._inverse_sqrt_key_dim, query.dtype))
    scores = ops.einsum(layer._dot_product_equation, key, query)
    probabilities = tap(layer._masked_softmax(scores, attention_mask))
    used = (
        layer._dropout_layer(probabilities, training=training)
        if layer._dropout > 0.0
        else probabilities
    )
    return ops.einsum(layer._combine_equation, used, value), probabilities


def attention_layers(model: Any, inputs: Any) -> tuple[LayerRef, ...]:
    """Return every ``MultiHeadAttention`` layer of the model (nested ones too), in the order
    one image runs them; layers the pass calls more than once, or not at all, are left out.

    Raises:
        LayerError: The model has no ``MultiHeadAttention`` layer that runs once.
    """
    unique: dict[int, LayerRef] = {}  # a layer reached by two paths is one layer
    for path, layer in iter_layers(model):
        if is_attention(layer):
            unique.setdefault(id(layer), LayerRef(path, layer))
    found = list(unique.values())
    plain = [
        ref
        for ref in found
        if type(ref.handle)._compute_attention is keras.layers.MultiHeadAttention._compute_attention
    ]
    if not plain:
        raise LayerError(
            f"found no keras.layers.MultiHeadAttention layer in model {model.name!r}"
            + (" (only subclasses with their own _compute_attention)" if found else "")
            + ": attention methods (legrad, attentionrollout) read the attention probabilities "
            "of MultiHeadAttention layers; use a layer method (gradcam, layercam, eigencam) on "
            "a token or feature-map layer"
        )
    with tapped(plain, [_unchanged] * len(plain), once=False) as ran:
        run(model, model_inputs(rows(inputs, 0, 1)), {})
    calls = Counter(ran)
    layers = tuple(plain[i] for i in dict.fromkeys(ran) if calls[i] == 1)
    if not layers:
        raise LayerError(
            f"no MultiHeadAttention layer of model {model.name!r} runs exactly once in its "
            "forward pass; pass layer= the attention layer of each block"
        )
    return layers


def blocks(model: Any, layers: Sequence[LayerRef]) -> list[list[LayerRef]]:
    """Return each attention layer's enclosing layers (nested models and layers holding it),
    nearest first: where LeGrad's ``head=`` reads the block's output tokens.

    Raises:
        MethodError: An attention layer sits in the model's own graph, in no block.
    """
    by_path = dict(iter_layers(model))
    chains = []
    for ref in layers:
        parts = ref.name.split("/")
        names = ["/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
        chain = [LayerRef(name, by_path[name]) for name in names if name in by_path]
        if not chain:
            raise MethodError(
                f"head= reads the output tokens of the block holding each attention layer (the "
                f"layer or nested model around it), and {ref.name!r} sits in the model's own "
                "graph, in no block; drop head= to explain the model's own score at every "
                "layer, or build each block as a layer or nested model"
            )
        chains.append(chain)
    return chains


def _unchanged(probabilities: Any) -> Any:
    return probabilities
