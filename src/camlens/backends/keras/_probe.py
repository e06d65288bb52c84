"""One probe of a Keras model: the compiled function that captures the layers' activations,
the target's scores and their gradients, compiled once per input shape, layers and target.

The per-framework gradient code is in ``tensorflow.py``, ``jax.py`` and ``torch.py`` (the same
``compile_probe``); activations arrive in the layer's own layout (channels-last maps, tokens)
and leave on the grid, ``(M, K, h, w)`` (``backends/_layout.py``).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import array_namespace
from keras import ops

from camlens._types import Array
from camlens.backends._layout import Layout, LayoutSpec, attention_tokens
from camlens.backends.base import (
    INPUT,
    Inputs,
    LayerRef,
    OutputSelector,
    Probe,
    image_of,
    model_inputs,
    signature,
)
from camlens.backends.base import rows as input_rows
from camlens.backends.keras import _attention, _biases, _layers, _targets
from camlens.backends.keras._forward import Forward
from camlens.backends.keras._graph import Replacement
from camlens.errors import MethodError
from camlens.targets import Target

__all__ = ["MAX_COMPILED", "Prober"]

MAX_COMPILED = 16


class Prober:
    """Runs probes of one model, keeping each compiled probe for the calls that can reuse it.

    The model is held weakly, by the prober and by the compiled probes: a prober is kept per
    model for as long as the model lives (see ``KerasBackend``).
    """

    def __init__(
        self,
        model: Any,
        impl: ModuleType,
        replacements: dict[int, Replacement],
        output: OutputSelector,
    ) -> None:
        """Bind the model, the framework's gradient module and how the output is read."""
        self._model = weakref.ref(model)
        self._impl = impl
        self._replacements = replacements
        self._output = output
        self._compiled: OrderedDict[Hashable, Callable[..., Any]] = OrderedDict()
        self._traces = 0
        # The layers with a bias, in the order they run, per input shape (FullGrad).
        self._bias_layers: dict[tuple[Any, ...], list[LayerRef]] = {}

    @property
    def traces(self) -> int:
        """Return how many probes have been compiled (one per distinct shape, layers, target)."""
        return self._traces

    def probe(
        self,
        inputs: Any,
        layers: Sequence[LayerRef],
        target: Target,
        n_units: int,
        *,
        gradients: bool,
        spec: LayoutSpec,
        guided: bool = False,
        biases: bool = False,
        hessian: bool = False,
    ) -> tuple[Probe, list[Layout]]:
        """Run the compiled probe for these inputs, layers and target; return it with the
        layers' layouts (activations, gradients and Hessian-vector products ``H A`` leave on
        the grid, ``(M, K, h, w)``).

        ``biases`` (with ``layers=[INPUT]`` and gradients) also taps every layer with a bias,
        after the input, for its bias-gradient (``_biases.py``).
        """
        if hessian and (guided or biases or not gradients):
            raise MethodError(
                "Hessian-vector products come with the model's own gradients: ask for "
                "gradients, and not for a guided backward pass or bias-gradients"
            )
        extra = self._biased(inputs, layers, gradients=gradients) if biases else []
        tapped = [*layers, *extra]
        image = image_of(inputs)
        explained = inputs.key if isinstance(inputs, Inputs) else None
        units, signs = _targets.plan(target, int(image.shape[0]), n_units)
        key = (
            signature(inputs),
            tuple(id(ref.handle) for ref in tapped),
            _targets.trace_key(target),
            units.shape,
            gradients,
            guided,
            biases,
            hessian,
        )

        def build() -> Callable[..., Any]:
            forward = Forward(
                self._model(),
                tapped,
                self._replacements,
                self._output,
                guided=guided,
                key=explained,
            )
            picker = _targets.Picker(target)
            return self._impl.compile_probe(  # type: ignore[no-any-return]
                forward, picker, gradients=gradients, required=len(layers), hessian=hessian
            )

        compiled = self._compiled_probe(key, build)
        acts, picked, used, flat, grads, products = compiled(
            model_inputs(inputs), ops.convert_to_tensor(units), signs
        )
        t = int(picked.shape[1])
        bias_terms = None
        if biases:
            k = len(layers)
            bias_terms = _biases.terms(
                extra,
                acts[k:],
                grads[k:],
                int(image.shape[0]),
                t,
                set(self._replacements),
                self._impl.for_maths,
            )
            acts, grads = acts[:k], grads[:k]
        resolved = _targets.record(target, picked, used, signs)
        size = _layers.input_size(tuple(int(d) for d in image.shape))
        batch = int(image.shape[0])
        layouts = [
            Layout(_layers.convention(), grid=size)
            if ref.handle is INPUT.handle
            else _layers.layout_of(
                ref.name, ref.handle, tuple(int(d) for d in a.shape), batch, size, spec
            )
            for ref, a in zip(layers, acts, strict=True)
        ]
        rows = [
            self._on_grid(a, lay, ref, t) for a, lay, ref in zip(acts, layouts, layers, strict=True)
        ]

        def on_grid(found: list[Any] | None) -> list[Array] | None:
            if found is None:
                return None
            return [
                self._on_grid(g, lay, ref, 1)
                for g, lay, ref in zip(found, layouts, layers, strict=True)
            ]

        outputs = np.asarray(ops.convert_to_numpy(flat), dtype=np.float32)
        probe = Probe(
            activations=rows,
            gradients=on_grid(grads),
            resolved=resolved,
            outputs=outputs,
            hessian_products=on_grid(products),
            biases=bias_terms,
        )
        return probe, layouts

    def attention_probe(
        self,
        inputs: Any,
        layers: Sequence[LayerRef],
        target: Target,
        n_units: int,
        *,
        gradients: bool,
        spec: LayoutSpec,
        head: Callable[[Any], Any] | None = None,
    ) -> Probe:
        """Run the compiled attention probe: each ``MultiHeadAttention`` layer's probabilities
        ``(M, heads, L, L)``, their gradients if asked, and the tokens' layout. With ``head``
        (and gradients), each layer's gradient is that of its own block's score, ``head`` of
        the block's output tokens for the units the model's output resolved."""
        _attention.check_layers(layers)
        head = head if gradients else None
        blocks = [] if head is None else _attention.blocks(self._model(), layers)
        image = image_of(inputs)
        batch = int(image.shape[0])
        units, signs = _targets.plan(target, batch, n_units)
        key = (
            "attention",
            signature(inputs),
            tuple(id(ref.handle) for ref in layers),
            _targets.trace_key(target),
            units.shape,
            gradients,
            None if head is None else _targets.trace_key(head),  # type: ignore[arg-type]
        )

        def build() -> Callable[..., Any]:
            forward = Forward(
                self._model(),
                layers,
                self._replacements,
                self._output,
                key=inputs.key if isinstance(inputs, Inputs) else None,
                attention=True,
                blocks=blocks,
            )
            picker = _targets.Picker(target) if head is None else _targets.BlockPicker(target, head)
            return self._impl.compile_probe(  # type: ignore[no-any-return]
                forward,
                picker,
                gradients=gradients,
                required=len(layers),
                per_layer=head is not None,
            )

        compiled = self._compiled_probe(key, build)
        acts, picked, used, flat, grads, _ = compiled(
            model_inputs(inputs), ops.convert_to_tensor(units), signs
        )
        t = int(picked.shape[1])
        size = _layers.input_size(tuple(int(d) for d in image.shape))
        tokens = attention_tokens(
            [ref.name for ref in layers],
            [tuple(int(d) for d in a.shape) for a in acts],
            batch,
            size,
            spec,
        )
        return Probe(
            activations=[_widened(self._impl.for_maths(a), t) for a in acts],
            gradients=None
            if grads is None
            else [_widened(self._impl.for_maths(g), 1) for g in grads],
            resolved=_targets.record(target, picked, used, signs),
            outputs=np.asarray(ops.convert_to_numpy(flat), dtype=np.float32),
            tokens=tokens,
        )

    def _compiled_probe(self, key: Hashable, build: Callable[[], Callable[..., Any]]) -> Any:
        """Return the compiled probe for ``key``, built (and the oldest dropped) if new."""
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = build()
            self._compiled[key] = compiled
            self._traces += 1
            if len(self._compiled) > MAX_COMPILED:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(key)
        return compiled

    def _biased(self, inputs: Any, layers: Sequence[LayerRef], *, gradients: bool) -> list[Any]:
        """Return the layers with a bias, in the order they run on inputs of this shape (found
        once per shape: one image runs with a tap on every layer)."""
        if not gradients or [ref.handle for ref in layers] != [INPUT.handle]:
            raise MethodError(
                "bias-gradients are taken along with the input's gradient: probe [INPUT] with "
                "gradients=True"
            )
        shape = signature(input_rows(inputs, 0, 1))
        if shape not in self._bias_layers:
            refs = _biases.bias_layers(*_layers.record(self._model(), inputs))
            _biases.check_activations(refs, set(self._replacements))
            self._bias_layers[shape] = refs
        return self._bias_layers[shape]

    def _on_grid(self, a: Any, layout: Layout, ref: LayerRef, repeat: int) -> Array:
        """Return a layer output (or its gradient) as ``(M, K, h, w)`` in the maths' library.

        A ``reshape=`` function gets the framework's tensor (written with ``keras.ops``).
        """
        for_maths = self._impl.for_maths
        if layout.kind == "reshape":
            a = for_maths(ops.convert_to_tensor(layout.to_grid(a, None, ref.name)))
        else:
            a = for_maths(a)
            a = layout.to_grid(a, array_namespace(a), ref.name)
        return _widened(a, repeat)


def _widened(a: Any, repeat: int) -> Array:
    """Return an array of the maths' library in float32 or wider, each row ``repeat`` times."""
    xp = array_namespace(a)
    if repeat > 1:
        a = xp.repeat(a, repeat, axis=0)
    return a if a.dtype in (xp.float32, xp.float64) else xp.astype(a, xp.float32)
