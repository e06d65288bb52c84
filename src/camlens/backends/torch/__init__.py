"""The PyTorch backend: ``torch.nn.Module`` models, CPU or CUDA (the device follows the model)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from camlens._types import Array, Size
from camlens.backends._common import prepare_inputs, to_host
from camlens.backends._layout import Layout, LayoutName, LayoutSpec
from camlens.backends.base import (
    Copies,
    InputKey,
    Inputs,
    InputSelector,
    LayerInfo,
    LayerRef,
    OutputSelector,
    Probe,
    Scoring,
    image_of,
)
from camlens.backends.torch import _attention, _layers, _perturb, _probe
from camlens.backends.torch._arrays import namespace
from camlens.backends.torch._probe import batched_gradients, hessian_products
from camlens.backends.torch._randomise import TorchCopies
from camlens.backends.torch._tail import Tail, make_tail
from camlens.errors import BadInputError, UnsupportedModelError
from camlens.targets import Target

__all__ = ["TorchBackend", "batched_gradients", "hessian_products"]


def _placement(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Return the device and dtype of the model's first floating parameter (else buffer).

    The order of ``chain(model.parameters(), model.buffers())``, found by a walk that stops at
    the first hit: ``parameters()`` builds a dotted name for every module it passes.
    """
    for kind in ("_parameters", "_buffers"):
        seen: set[torch.nn.Module] = set()
        stack = [model]
        while stack:  # pre-order, each module once, as named_modules() walks
            module = stack.pop()
            if module in seen:
                continue
            seen.add(module)
            for tensor in getattr(module, kind).values():
                if tensor is not None and tensor.is_floating_point():
                    return tensor.device, tensor.dtype
            stack.extend(reversed([c for c in module._modules.values() if c is not None]))
    return torch.device("cpu"), torch.float32


class TorchBackend:
    """Explain a ``torch.nn.Module``. Inputs are ``(N, C, H, W)`` tensors or NumPy arrays, or a
    tuple or list of inputs (the model is called as ``model(*inputs)``) or a dict of them
    (``model(**inputs)``) holding such an image batch."""

    framework = "torch"
    score_kind = "model output"
    channels_last = False
    gradients = True
    attention = True
    hessians = True

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        output: OutputSelector = None,
        layout: LayoutSpec | None = None,
        input: InputSelector = None,
    ) -> None:
        """Wrap ``model``; ``output`` picks the tensor to explain from a tuple/dict output,
        ``layout`` says how the explained layers' outputs lie on the image grid, ``input``
        which of several inputs is the explained image."""
        self.model = model
        self.output = output
        self.input = input
        self.layout = layout or LayoutSpec()
        self._tails: dict[str, Tail] = {}
        # The layouts the last probe found, per (layer, input shape): Ablation-CAM's rebuilt
        # layer outputs take them (derived from shapes, never a result).
        self._layouts: dict[tuple[str, tuple[int, ...]], Layout] = {}
        #: Per layer name, the layout its modules declare (``_probe.probe``'s ``declared``).
        self._declared: dict[str, tuple[LayoutName | None, LayoutName | None]] = {}

    def resolve_layer(self, layer: Any) -> LayerRef:
        """Return the layer given by a dotted name or a module object."""
        return _layers.resolve_layer(self.model, layer)

    def auto_layer(self, inputs: Any) -> LayerRef:
        """Return the last module whose output is a spatial feature map."""
        return _layers.auto_layer(self.model, inputs)

    def summarize(self, input_size: Size | None, channels: int) -> list[LayerInfo]:
        """Describe every submodule from one ``(1, channels, H, W)`` image of zeros (224 x 224
        unless ``input_size`` is given)."""
        h, w = input_size if input_size is not None else (224, 224)
        zeros = np.zeros((1, channels, h, w), dtype=np.float32)
        return _layers.summarize(self.model, self._prepare_image(zeros))

    def copies(self) -> Copies:
        """Return the maker of randomised copies of the model (for the sanity check)."""
        return TorchCopies(self.model)

    def _placement(self) -> tuple[torch.device, torch.dtype]:
        """Return the model's device and float dtype; refuse a model on the meta device."""
        dev, dtype = _placement(self.model)
        if dev.type == "meta":
            raise UnsupportedModelError(
                "the model's parameters are on the 'meta' device (shapes without values), so it "
                "cannot run; give it real weights first, e.g. model.to_empty(device='cpu') then "
                "model.load_state_dict(...)"
            )
        return dev, dtype

    def prepare(self, inputs: Any) -> Any:
        """Validate ``inputs`` and return them on the model's device, in its float dtype.

        A tuple, list or dict of inputs becomes an :class:`Inputs` (see
        ``_common.prepare_inputs``): the explained image prepared so, the others only put on
        the model's device (NumPy arrays as tensors, dtypes and values unchanged).
        """
        return prepare_inputs(inputs, self.input, self._prepare_image, self._prepare_other)

    def _prepare_other(self, key: InputKey, value: Any) -> Any:
        """Return an input beside the explained image on the model's device, else as it is."""
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, torch.Tensor):
            return value.detach().to(device=self._placement()[0])
        return value

    def _prepare_image(self, inputs: Any, key: InputKey | None = None) -> torch.Tensor:
        """Validate an image batch and return it on the model's device, in its float dtype."""
        if isinstance(inputs, torch.Tensor):
            x = inputs.detach()
        elif isinstance(inputs, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(inputs))
        else:
            raise BadInputError(
                f"inputs must be a torch.Tensor or a NumPy array of shape (N, C, H, W); got "
                f"{type(inputs).__name__}"
            )
        shape = tuple(x.shape)
        if not x.is_floating_point():
            raise BadInputError(
                f"inputs have dtype {x.dtype}; camlens does not guess preprocessing: convert "
                "them to float and normalise them as the model expects"
            )
        if x.ndim == 3:
            raise BadInputError(
                f"inputs of shape {shape} have no batch axis; for one image pass inputs[None], "
                "shape (1, C, H, W)"
            )
        if x.ndim != 4:
            raise BadInputError(
                f"inputs must have shape (N, C, H, W); got rank {x.ndim} shape {shape}"
            )
        if shape[0] == 0:
            raise BadInputError("the batch is empty (N = 0); pass at least one image")
        if x.device.type == "meta":
            raise BadInputError(
                "inputs are on the 'meta' device (a shape without values); pass real values, "
                "e.g. a tensor on 'cpu' or on the model's device"
            )
        dev, dtype = self._placement()
        x = x.to(device=dev, dtype=dtype)
        # One reduction is cheap; a NaN or an infinity anywhere makes the sum non-finite (a sum
        # that overflows from finite values is rechecked element by element).
        if not math.isfinite(x.sum().item()):
            bad = int((~torch.isfinite(x)).sum())
            if bad:
                raise BadInputError(
                    f"inputs contain {bad} NaN or infinite value(s); clean them first"
                )
        return x

    def input_size(self, inputs: Any) -> Size:
        """Return ``(H, W)`` of ``(N, C, H, W)`` inputs (of the explained one of several)."""
        image = image_of(inputs)
        return int(image.shape[-2]), int(image.shape[-1])

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
        """Run the model once, capturing activations, scores and (if asked) gradients, each
        layer's on its grid, ``(M, K, h, w)``; ``guided`` guides the backward pass at ReLUs;
        ``biases`` adds every module's bias-gradient (with :data:`INPUT` among the layers);
        ``hessian`` adds the Hessian-vector products ``H A`` (a double backward)."""
        probe, layouts = _probe.probe(
            self.model,
            inputs,
            layers,
            target,
            self.output,
            gradients=gradients,
            spec=self.layout,
            guided=guided,
            biases=biases,
            hessian=hessian,
            declared=self._declared,
        )
        for ref, layout in zip(layers, layouts, strict=True):
            self._layouts[ref.name, tuple(image_of(inputs).shape)] = layout
        return probe

    def attention_layers(self, inputs: Any) -> tuple[LayerRef, ...]:
        """Return every module whose output holds attention probabilities, in running order."""
        return _attention.attention_layers(self.model, inputs)

    def attention_probe(
        self,
        inputs: Any,
        layers: Sequence[LayerRef],
        target: Target,
        *,
        gradients: bool,
        head: Callable[[Any], Any] | None = None,
    ) -> Probe:
        """Run the model once, capturing the layers' attention maps ``(M, heads, L, L)`` and
        (if asked) their gradients, of each block's own score where ``head`` is given;
        ``Probe.tokens`` is their tokens' layout."""
        return _attention.probe(
            self.model,
            inputs,
            layers,
            target,
            self.output,
            gradients=gradients,
            spec=self.layout,
            head=head,
        )

    def to_numpy(self, array: Array) -> np.ndarray:
        """Copy a tensor (or a NumPy array a method returned) to a NumPy array on the host."""
        return to_host(array)

    def masked_scores(
        self,
        inputs: Any,
        masks: Callable[[int, int, int], Array],
        counts: Sequence[int],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score masked inputs in batches, on the model's device."""
        return _perturb.masked_scores(self.model, self.output, inputs, masks, counts, scoring)

    def perturbed_scores(
        self,
        make: Callable[[int, int, int], Array],
        counts: Sequence[int],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score the ``(B, C, H, W)`` inputs ``make(n, start, stop)`` builds, in batches."""
        placement = self._placement()
        return _perturb.perturbed_scores(self.model, self.output, placement, make, counts, scoring)

    def ablated_scores(
        self,
        inputs: Any,
        layer: LayerRef,
        activations: Sequence[Array],
        channels: Sequence[np.ndarray],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score channel ablations, re-running only the layer's tail where fx can trace it."""
        return _perturb.ablated_scores(
            self.model,
            self.output,
            self._tail(layer, inputs),
            inputs,
            activations,
            channels,
            scoring,
            self._to_layer(layer, inputs),
        )

    def replaced_scores(
        self,
        inputs: Any,
        layer: LayerRef,
        make: Callable[[int, int, int], Array],
        counts: Sequence[int],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score replaced layer outputs, re-running only the layer's tail where fx can trace it."""
        return _perturb.replaced_scores(
            self.model,
            self.output,
            self._tail(layer, inputs),
            inputs,
            make,
            counts,
            scoring,
            self._to_layer(layer, inputs),
        )

    def _tail(self, layer: LayerRef, inputs: Any) -> Tail:
        """Return the layer's tail, built on first use and kept (see ``_tail.py``).

        For several inputs the whole model runs (the ``torch.fx`` split takes one input), and
        the model is not traced at all.
        """
        if isinstance(inputs, Inputs):
            return Tail(self.model, self.model.get_submodule(layer.name), None, "several inputs")
        if layer.name not in self._tails:
            self._tails[layer.name] = make_tail(self.model, layer.name)
        return self._tails[layer.name]

    def _to_layer(self, layer: LayerRef, inputs: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        """Return the function putting ``(B, K, h, w)`` grids back in the layer's own layout
        (the one the last probe found for these inputs)."""
        layout = self._layouts.get((layer.name, tuple(image_of(inputs).shape)), Layout("nchw"))
        xp = namespace()

        def to_layer(grid: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = layout.from_grid(grid, xp, layer.name)
            return out

        return to_layer
