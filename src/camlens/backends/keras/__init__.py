"""The Keras 3 backend: functional, Sequential, subclassed and nested models, on TensorFlow,
JAX or PyTorch (whichever Keras is running on; camlens reads it and never sets it).

Layout follows Keras's own backends: one small gradient module per framework
(``tensorflow.py``, ``jax.py``, ``torch.py``) with the same ``compile_probe`` function, and
shared graph code. Activations arrive in the layer's own layout (channels-last maps, tokens)
and leave this module on the grid, ``(N, K, h, w)``.
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import keras
import numpy as np
from array_api_compat import array_namespace
from keras import ops

from camlens._types import Array, Size
from camlens.backends._common import check_finite, check_host_batch, prepare_inputs
from camlens.backends._layout import Layout, LayoutSpec
from camlens.backends.base import (
    Copies,
    InputKey,
    InputSelector,
    LayerInfo,
    LayerRef,
    OutputSelector,
    Probe,
    Scoring,
    image_of,
    model_inputs,
    rows,
    signature,
)
from camlens.backends.keras import _attention, _layers, _perturb, _probe
from camlens.backends.keras._forward import Forward, softmax_replacements
from camlens.backends.keras._graph import graph_of
from camlens.backends.keras._randomise import KerasCopies
from camlens.backends.keras._tail import make_tail
from camlens.errors import BadInputError, UnsupportedModelError
from camlens.targets import Target, UnitTarget

__all__ = ["KerasBackend"]


def _identity(index: int, activation: Any) -> Any:
    return activation


@dataclass
class _Shared:
    """What every backend of one model (with the same output and softmax reading) reuses: the
    compiled probes and the automatic layer picks per input shape."""

    prober: _probe.Prober
    auto_layers: dict[tuple[Any, ...], LayerRef] = field(default_factory=dict)
    attention_layers: dict[tuple[Any, ...], tuple[LayerRef, ...]] = field(default_factory=dict)
    forward: Callable[[Any], Any] | None = None  # compiled, for perturbed inputs


#: Per model, held weakly (nothing in it refers to the model strongly): ``camlens.explain``
#: builds a backend per call, and compiling a probe costs more than the call itself.
_SHARED: weakref.WeakKeyDictionary[Any, dict[Hashable, _Shared]] = weakref.WeakKeyDictionary()


class KerasBackend:
    """Explain a ``keras.Model``. Inputs are the model's own batch (channels-last by default),
    or a list, tuple or dict of inputs holding such an image batch (the model is called
    ``model(inputs)``, as Keras models with several inputs are)."""

    gradients = True
    hessians = True
    #: The probabilities of ``keras.layers.MultiHeadAttention`` layers (``_attention.py``).
    attention = True

    def __init__(
        self,
        model: Any,
        *,
        output: OutputSelector = None,
        logits: bool = True,
        layout: LayoutSpec | None = None,
        input: InputSelector = None,
    ) -> None:
        """Wrap a built model; with ``logits`` a final softmax is read before it is applied;
        ``layout`` says how the explained layers' outputs lie on the image grid, ``input``
        which of several inputs is the explained image."""
        if not model.built:
            raise UnsupportedModelError(
                f"model {model.name!r} is not built; call it once on a batch, or build it with "
                "an Input, before explaining it"
            )
        self.model = model
        self.output = output
        self.input = input
        self.layout = layout or LayoutSpec()
        # The layouts the last probe found, per (layer, input shape), for Ablation-CAM.
        self._layouts: dict[tuple[int, tuple[int, ...]], Layout] = {}
        name = keras.backend.backend()
        self.framework = f"keras-{name}"
        self._impl: ModuleType = importlib.import_module(f"camlens.backends.keras.{name}")
        replacements, self.score_kind = softmax_replacements(model)
        self._replacements = replacements if logits else {}
        if not logits and self.score_kind == "pre-softmax logit":
            self.score_kind = "softmax probability"
        self._channels_last = keras.config.image_data_format() == "channels_last"
        self.channels_last = self._channels_last
        shared = _SHARED.setdefault(model, {})
        key = (name, output, logits, self._channels_last)  # a function selector: by identity
        if key not in shared:
            prober = _probe.Prober(model, self._impl, self._replacements, output)
            shared[key] = _Shared(prober)
        self._shared = shared[key]
        self._prober = self._shared.prober
        self._tails: dict[int, Any] = {}
        self._units_by_shape: dict[tuple[Any, ...], int] = {}

    def resolve_layer(self, layer: Any) -> LayerRef:
        """Return the layer given by a bare name, an ``outer/inner`` path or a layer object."""
        return _layers.resolve_layer(self.model, layer)

    def auto_layer(self, inputs: Any) -> LayerRef:
        """Return the last layer whose output is a spatial feature map (found once per input
        shape and model: a Keras model's graph is fixed once built)."""
        shape = signature(rows(inputs, 0, 1))
        picks = self._shared.auto_layers
        if shape not in picks:
            picks[shape] = _layers.auto_layer(self.model, inputs)
        return picks[shape]

    def summarize(self, input_size: Size | None, channels: int) -> list[LayerInfo]:
        """Describe every layer from one image of zeros (the sizes the model fixes win)."""
        sample = _layers.sample_input(self.model, input_size, channels)
        return _layers.summarize(self.model, self._prepare_image(sample))

    def copies(self) -> Copies:
        """Return the maker of randomised copies of the model (for the sanity check)."""
        return KerasCopies(self.model)

    def prepare(self, inputs: Any) -> Any:
        """Validate ``inputs`` and return them as a tensor of the model's dtype.

        A tuple, list or dict of inputs becomes an :class:`Inputs` (see
        ``_common.prepare_inputs``): the explained image validated against its own model
        input, the others converted to tensors (of their model input's dtype, as Keras does).
        """
        return prepare_inputs(inputs, self.input, self._prepare_image, self._prepare_other)

    def _prepare_other(self, key: InputKey, value: Any) -> Any:
        """Return an input beside the explained image as a tensor of the backend."""
        try:
            array = np.asarray(ops.convert_to_numpy(value))
        except Exception as exc:
            raise BadInputError(
                f"input {key!r} must be an array or tensor; got {type(value).__name__} ({exc})"
            ) from exc
        spec = self._graph_input(key)
        return ops.convert_to_tensor(array, dtype=array.dtype if spec is None else spec.dtype)

    def _prepare_image(self, inputs: Any, key: InputKey | None = None) -> Any:
        """Validate an image batch and return it as a tensor of its model input's dtype."""
        try:
            array = np.asarray(ops.convert_to_numpy(inputs))
        except Exception as exc:
            raise BadInputError(
                f"inputs must be an array or tensor of shape (N, H, W, C); got "
                f"{type(inputs).__name__} ({exc})"
            ) from exc
        spec = self._graph_input(key)
        expected = None if spec is None else tuple(spec.shape)
        check_host_batch(array, "(N, H, W, C)", batchless=expected is None or len(expected) == 4)
        shape = array.shape
        if expected is not None and any(
            e is not None and e != s for e, s in zip(expected[1:], shape[1:], strict=False)
        ):
            raise BadInputError(
                f"inputs of shape {shape} do not fit the model's input {tuple(expected)}"
            )
        check_finite(array)
        dtype = self.model.inputs[0].dtype if graph_of(self.model) is not None else "float32"
        return ops.convert_to_tensor(array, dtype=dtype if spec is None else spec.dtype)

    def _graph_input(self, key: InputKey | None) -> Any:
        """Return the functional graph's input for ``key`` (``None``: the only input), or
        ``None`` where the model has no graph or no such input."""
        graph = graph_of(self.model)
        if graph is None:
            return None
        if key is None:
            return graph.inputs[0] if len(graph.inputs) == 1 else None
        struct = getattr(graph, "_inputs_struct", None)
        if isinstance(struct, dict):
            return struct.get(key)
        if isinstance(struct, (list, tuple)) and isinstance(key, int) and key < len(struct):
            return struct[key]
        return None

    def input_size(self, inputs: Any) -> Size:
        """Return ``(H, W)`` of the inputs (of the explained one of several)."""
        shape = tuple(image_of(inputs).shape)
        return (
            (int(shape[1]), int(shape[2]))
            if self._channels_last
            else (
                int(shape[2]),
                int(shape[3]),
            )
        )

    def _n_units(self, inputs: Any) -> int:
        """Return the number of output units, from the graph or (once per shape) one image."""
        graph = graph_of(self.model)
        if graph is not None and len(graph.outputs) == 1 and self.output is None:
            shape = graph.outputs[0].shape[1:]
            if all(d is not None for d in shape):
                return int(np.prod(shape))
        first = rows(inputs, 0, 1)
        key = signature(first)
        if key not in self._units_by_shape:
            forward = Forward(self.model, [], self._replacements, self.output)
            out = forward(model_inputs(first), _identity)
            self._units_by_shape[key] = int(np.prod(out.shape[1:]))
        return self._units_by_shape[key]

    def probe(
        self,
        inputs: Any,
        layers: Sequence[LayerRef],
        target: Target,
        *,
        gradients: bool,
        guided: bool = False,
        biases: bool = False,
        hessian: bool = False,
    ) -> Probe:
        """Run the compiled probe for these inputs, layers and target (``guided``: guided
        backward pass at every ReLU; ``biases``: every layer's bias-gradient too; ``hessian``:
        the Hessian-vector products ``H A`` too)."""
        n_units = self._n_units(inputs) if isinstance(target, UnitTarget) else 0
        probe, layouts = self._prober.probe(
            inputs,
            layers,
            target,
            n_units,
            gradients=gradients,
            spec=self.layout,
            guided=guided,
            biases=biases,
            hessian=hessian,
        )
        for ref, layout in zip(layers, layouts, strict=True):
            self._layouts[id(ref.handle), tuple(image_of(inputs).shape)] = layout
        return probe

    def attention_layers(self, inputs: Any) -> tuple[LayerRef, ...]:
        """Return every ``MultiHeadAttention`` layer in the order the model runs them (found
        once per input shape and model, by one pass of one image)."""
        shape = signature(rows(inputs, 0, 1))
        found = self._shared.attention_layers
        if shape not in found:
            found[shape] = _attention.attention_layers(self.model, inputs)
        return found[shape]

    def attention_probe(
        self,
        inputs: Any,
        layers: Sequence[LayerRef],
        target: Target,
        *,
        gradients: bool,
        head: Callable[[Any], Any] | None = None,
    ) -> Probe:
        """Run the compiled attention probe: each ``MultiHeadAttention`` layer's probabilities
        ``(M, heads, L, L)`` and (if asked) their gradients, of each block's own score where
        ``head`` is given (the block: the layer or nested model around the attention layer);
        ``Probe.tokens`` is their tokens' layout."""
        n_units = self._n_units(inputs) if isinstance(target, UnitTarget) else 0
        return self._prober.attention_probe(
            inputs, layers, target, n_units, gradients=gradients, spec=self.layout, head=head
        )

    def to_numpy(self, array: Array) -> np.ndarray:
        """Copy a result array to NumPy."""
        return np.asarray(ops.convert_to_numpy(array))

    def masked_scores(
        self,
        inputs: Any,
        masks: Callable[[int, int, int], Array],
        counts: Sequence[int],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score masked inputs with a compiled forward, in batches of at most ``batch_size``."""
        forward = self._compiled_forward()
        return _perturb.masked_scores(
            forward, self.output, self._channels_last, inputs, masks, counts, scoring
        )

    def _compiled_forward(self) -> Callable[[Any], Any]:
        if self._shared.forward is None:
            forward = Forward(self.model, [], self._replacements, self.output)
            self._shared.forward = self._impl.compile_forward(forward)
        return self._shared.forward

    def perturbed_scores(
        self,
        make: Callable[[int, int, int], Array],
        counts: Sequence[int],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score the channels-first ``(B, C, H, W)`` inputs ``make(n, start, stop)`` builds."""
        dtype = self.model.inputs[0].dtype if graph_of(self.model) is not None else "float32"
        forward = self._compiled_forward()
        return _perturb.perturbed_scores(
            forward, self.output, self._channels_last, dtype, make, counts, scoring
        )

    def ablated_scores(
        self,
        inputs: Any,
        layer: LayerRef,
        activations: Sequence[Array],
        channels: Sequence[np.ndarray],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score channel ablations, re-running only the layer's tail in functional graphs."""
        return _perturb.ablated_scores(
            self._tail(layer),
            self.output,
            self._to_layer(layer, inputs),
            inputs,
            activations,
            channels,
            scoring,
        )

    def replaced_scores(
        self,
        inputs: Any,
        layer: LayerRef,
        make: Callable[[int, int, int], Array],
        counts: Sequence[int],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score replaced layer outputs, re-running only the layer's tail in functional graphs."""
        return _perturb.replaced_scores(
            self._tail(layer),
            self.output,
            self._to_layer(layer, inputs),
            inputs,
            make,
            counts,
            scoring,
        )

    def _to_layer(self, layer: LayerRef, inputs: Any) -> Callable[[np.ndarray], np.ndarray]:
        """Return the function putting ``(B, K, h, w)`` grids back in the layer's own layout
        (the one the last probe found for these inputs)."""
        default = Layout("nhwc" if self._channels_last else "nchw")
        layout = self._layouts.get((id(layer.handle), tuple(image_of(inputs).shape)), default)

        def to_layer(grid: np.ndarray) -> np.ndarray:
            return np.asarray(layout.from_grid(grid, array_namespace(grid), layer.name))

        return to_layer

    def _tail(self, layer: LayerRef) -> Any:
        """Return the layer's tail, built on first use and kept (see ``_tail.py``)."""
        key = id(layer.handle)
        if key not in self._tails:
            self._tails[key] = make_tail(self.model, layer.handle, self._replacements)
        return self._tails[key]
