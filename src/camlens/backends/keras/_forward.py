"""The traced forward pass every Keras backend shares: the model run with taps at its layers."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras import ops

from camlens.backends._common import select_output
from camlens.backends.base import INPUT, InputKey, LayerRef, OutputSelector, replaced
from camlens.backends.keras._attention import tapped
from camlens.backends.keras._graph import Replacement, iter_layers, run
from camlens.errors import LayerError, MethodError

#: ``tap(i, activation) -> what the network receives instead``.
LayerTap = Callable[[int, Any], Any]
#: What each framework module's ``compile_probe`` returns for ``(x, units, signs)``: the
#: activations, the picked scores, the units, the flat outputs, the gradients and the
#: Hessian-vector products (``None`` when not asked for).
Outputs = tuple[list[Any], Any, Any, Any, list[Any] | None, list[Any] | None]
Compiled = Callable[[Any, Any, Any], Outputs]


def is_tensor(x: Any) -> bool:
    """Return whether ``x`` is a tensor of the active Keras backend."""
    return bool(ops.is_tensor(x))


class Forward:
    """A forward pass of ``model`` that hands each target layer's output to a tap.

    The model is held weakly: compiled functions built on a forward are kept per model (see
    ``KerasBackend``) and must not keep the model alive.
    """

    def __init__(
        self,
        model: Any,
        layers: Sequence[LayerRef],
        replacements: dict[int, Replacement],
        output: OutputSelector,
        *,
        guided: bool = False,
        key: InputKey | None = None,
        attention: bool = False,
        blocks: Sequence[Sequence[LayerRef]] = (),
    ) -> None:
        """Bind the model (weakly), the tapped layers (:data:`INPUT` taps the input itself:
        of several inputs, the one at ``key``) and how the output is read; ``guided`` guides
        the backward pass at every ReLU. With ``attention`` the layers are
        ``MultiHeadAttention`` layers and their taps see their attention probabilities
        (``_attention.tapped``), not their outputs; with ``blocks`` (each attention layer's
        enclosing layers, nearest first) the forward returns ``(output, tokens)``, ``tokens``
        each attention layer's block output (LeGrad's ``head=``)."""
        self._model = weakref.ref(model)
        self.key = key
        self.attention = attention
        self.blocks = blocks
        self.layers = layers
        self.replacements = replacements
        self.output = output
        self.guides = _relu_layers(model) if guided else frozenset()

    @property
    def model(self) -> Any:
        """Return the model (which is alive while anything calls its forward)."""
        return self._model()

    def __call__(self, inputs: Any, tap: LayerTap) -> Any:
        """Run the model on ``inputs`` (a tensor, or a list, tuple or dict of several); return
        the tensor to explain."""
        if self.attention:
            return self._attend(inputs, tap)
        for i, ref in enumerate(self.layers):
            if ref.handle is INPUT.handle:
                if self.key is None:
                    inputs = tap(i, inputs)
                else:
                    inputs = replaced(inputs, self.key, tap(i, inputs[self.key]))
        taps = {
            id(ref.handle): _checked(ref, i, tap)
            for i, ref in enumerate(self.layers)
            if ref.handle is not INPUT.handle
        }
        for key in self.guides:
            taps[key] = _guided(taps.get(key))
        raw = run(self.model, inputs, taps, self.replacements, shared=self.guides)
        return select_output(raw, self.output, is_tensor)

    def _attend(self, inputs: Any, tap: LayerTap) -> Any:
        """Run the model with each attention layer's probabilities handed to the tap (and,
        with blocks, each block's output kept)."""
        shapes: dict[int, tuple[int, ...]] = {}

        def seen(index: int) -> Callable[[Any], Any]:
            checked = _checked(self.layers[index], index, tap)

            def see(a: Any) -> Any:
                shapes[index] = tuple(a.shape)
                return checked(a)

            return see

        outputs: dict[int, Any] = {}

        def keep(key: int) -> Callable[[Any], Any]:
            def hold(out: Any) -> Any:
                outputs.setdefault(key, out)
                return out

            return hold

        kept = {id(ref.handle): keep(id(ref.handle)) for chain in self.blocks for ref in chain}
        with tapped(self.layers, [seen(i) for i in range(len(self.layers))]) as order:
            raw = run(self.model, inputs, kept, self.replacements, shared=frozenset(kept))
        if order != sorted(order):
            ran = [self.layers[i].name for i in order]
            raise LayerError(f"give the attention layers in the order the model runs them: {ran}")
        out = select_output(raw, self.output, is_tensor)
        if not self.blocks:
            return out
        tokens = [
            _block_output(chain, outputs, shapes[i], self.layers[i])
            for i, chain in enumerate(self.blocks)
        ]
        return out, tokens


def _block_output(
    chain: Sequence[LayerRef], outputs: dict[int, Any], shape: tuple[int, ...], ref: LayerRef
) -> Any:
    """Return the output tokens ``(N, L, C)`` of the block holding an attention layer: the
    first of its enclosing layers to return one tensor of the maps' batch and tokens."""
    n, tokens = shape[0], shape[2]
    for layer in chain:
        out = outputs.get(id(layer.handle))
        if (
            out is not None
            and is_tensor(out)
            and len(out.shape) == 3
            and tuple(out.shape[:2]) == (n, tokens)
        ):
            return out
    raise LayerError(
        f"no layer enclosing the attention layer {ref.name!r} returns its block's tokens "
        f"({n}, {tokens}, C), which head= reads; drop head= to explain the model's own score"
    )


def ordered(layers: Sequence[LayerRef], seen: dict[int, Any]) -> list[Any]:
    """Return what the taps saw, ``seen[i]`` for layer ``i``, in the layers' order (the model
    may run them in another); refuse a layer that did not run."""
    missing = [ref.name for i, ref in enumerate(layers) if i not in seen]
    if missing:
        raise LayerError(f"layer(s) {missing} did not run in the model's forward pass")
    return [seen[i] for i in range(len(layers))]


def _guided(tap: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """Return the tap that guides a ReLU layer's output (after the layer's own tap, if any)."""
    if tap is None:
        return _guide  # type: ignore[no-any-return]
    return lambda out: _guide(tap(out))


@ops.custom_gradient
def _guide(x: Any) -> Any:
    """The identity whose backward lets only positive gradients through (guided backprop)."""

    def grad(*args: Any, upstream: Any = None) -> Any:
        if upstream is None:  # the torch backend passes it positionally
            (upstream,) = args
        return ops.maximum(upstream, 0.0)

    return ops.multiply(x, 1.0), grad


def _is_relu(layer: Any) -> bool:
    """Return whether the layer's output is a ReLU's (or ReLU6's): a ReLU layer or a layer
    whose activation is one."""
    if isinstance(layer, keras.layers.ReLU):
        return not layer.negative_slope and not layer.threshold
    return getattr(layer, "activation", None) in (keras.activations.relu, keras.activations.relu6)


def _relu_layers(model: Any) -> frozenset[int]:
    """Return the ids of the model's layers that end in a ReLU; refuse a model without any."""
    found = frozenset(id(layer) for _, layer in iter_layers(model) if _is_relu(layer))
    if not found:
        raise MethodError(
            "guided backpropagation changes the backward pass at ReLU layers and ReLU "
            "activations, and this model has none; use saliency or gradcam instead"
        )
    return found


def _checked(ref: LayerRef, index: int, tap: LayerTap) -> Callable[[Any], Any]:
    def check(out: Any) -> Any:
        if not is_tensor(out):
            raise LayerError(
                f"layer {ref.name!r} returns a {type(out).__name__}, not a feature map tensor"
            )
        # Its layout on the grid is checked once the shape is known (``_layers.layout_of``).
        return tap(index, out)

    return check


def softmax_replacements(model: Any) -> tuple[dict[int, Replacement], str]:
    """Return how to read a classifier's pre-softmax scores, and what the score is.

    A final ``Softmax`` layer or ``Activation("softmax")`` is skipped; a final ``Dense`` with a
    softmax activation is computed without it (``x @ kernel + bias``, reading its weights). The
    user's model is not modified.
    """
    from camlens.backends.keras._graph import output_operation

    found = output_operation(model)
    if found is None:
        return {}, "model output"
    op, _ = found
    softmax = keras.activations.softmax
    if isinstance(op, keras.layers.Softmax) or (
        isinstance(op, keras.layers.Activation) and op.activation is softmax
    ):
        return {id(op): lambda op, args, kwargs: args[0]}, "pre-softmax logit"
    if isinstance(op, keras.layers.Dense) and op.activation is softmax:

        def dense_logits(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            z = ops.matmul(args[0], op.kernel)
            return z + op.bias if op.use_bias else z

        return {id(op): dense_logits}, "pre-softmax logit"
    is_probability = isinstance(op, keras.layers.Softmax) or getattr(op, "activation", None) is (
        softmax
    )
    return {}, "softmax probability" if is_probability else "model output"
