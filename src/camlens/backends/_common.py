"""What the backends share, and what the framework-free code asks of arrays. No framework here.

- Arrays of any library in methods, post-processing, targets and rendering: their namespace and
  host copies. What differs by library lives in the backends: a torch tensor is handled by
  ``backends/torch/_arrays.py``, reached only once such a tensor exists (so torch is already
  imported); everything else goes through ``array_api_compat`` and ``numpy.asarray``.
- Normalising a model's inputs once: one array, or several with the explained one picked out.
- Picking the tensor to explain from a model's raw output.
- Listing layers: the automatic pick and ``camlens layers``, from one recorded pass, with
  each layer's layout on the image grid (``_layout.py``).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
from array_api_compat import array_namespace

from camlens._types import Array
from camlens.backends._layout import Layout
from camlens.backends.base import (
    InputKey,
    Inputs,
    InputSelector,
    LayerInfo,
    LayerRef,
    OutputSelector,
    Probe,
    keys_of,
)
from camlens.errors import BadInputError, LayerError, MethodError, UnsupportedModelError
from camlens.targets import Target

__all__ = [
    "Finished",
    "LayerRules",
    "LayoutOf",
    "NoAttention",
    "auto_pick",
    "describe_layers",
    "namespace",
    "prepare_inputs",
    "select_output",
    "to_host",
]


def _is_torch(x: Any) -> bool:
    """Return whether ``x`` is a torch tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def namespace(*arrays: Array) -> Any:
    """Return the array namespace of ``arrays`` (all from one library)."""
    if _is_torch(arrays[0]):
        from camlens.backends.torch import _arrays

        return _arrays.namespace()
    return array_namespace(*arrays)


def to_host(x: Any) -> np.ndarray:
    """Copy a small array of any library to NumPy (a NumPy array is returned as it is)."""
    if isinstance(x, np.ndarray):
        return x
    if _is_torch(x):
        from camlens.backends.torch import _arrays

        return _arrays.to_numpy(x)
    if hasattr(x, "detach"):  # a tensor of torch's interface from elsewhere (duck-typed)
        tensor = x.detach().cpu()
        if str(getattr(tensor, "dtype", "")) == "torch.bfloat16":  # NumPy has no bfloat16
            tensor = tensor.float()
        return np.asarray(tensor.numpy())
    return np.asarray(x)


def check_host_batch(array: np.ndarray, layout: str, *, batchless: bool = True) -> None:
    """Refuse a host image batch that is not float, not ``(N, ...)`` 4-D or empty, with the
    fix in words; ``layout`` names the expected axes (``"(N, H, W, C)"``), and ``batchless``
    says a 3-D array is one image without its batch axis."""
    shape = array.shape
    if not np.issubdtype(array.dtype, np.floating):
        raise BadInputError(
            f"inputs have dtype {array.dtype}; camlens does not guess preprocessing: convert "
            "them to float and normalise them as the model expects"
        )
    if array.ndim == 3 and batchless:
        raise BadInputError(
            f"inputs of shape {shape} have no batch axis; for one image pass inputs[None]"
        )
    if array.ndim != 4:
        raise BadInputError(f"inputs must be 4-D {layout}; got shape {shape}")
    if shape[0] == 0:
        raise BadInputError("the batch is empty (N = 0); pass at least one image")


def check_finite(array: np.ndarray) -> None:
    """Refuse a host batch holding NaN or infinite values, saying how many."""
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise BadInputError(f"inputs contain {bad} NaN or infinite value(s); clean them first")


def no_attention(framework: str) -> MethodError:
    """Return the error for an attention method (LeGrad, attention rollout) on a backend that
    captures no attention maps."""
    return MethodError(
        f"attention methods (legrad, attentionrollout) read each block's attention "
        f"probabilities, and camlens captures no attention maps from {framework} models; "
        "explain the PyTorch or Keras transformer itself (transformers models in eager "
        "attention, keras.layers.MultiHeadAttention), or use a layer method (gradcam, layercam, "
        "eigencam) on a token layer"
    )


class NoAttention:
    """The attention part of the backend contract, for a backend that captures no attention
    maps: :attr:`attention` is False and both calls refuse with :func:`no_attention` (the
    explainer refuses an attention method before it gets here)."""

    framework: str
    attention = False

    def attention_layers(self, inputs: Any) -> tuple[LayerRef, ...]:
        """Refuse: attention maps are captured from PyTorch and Keras models only."""
        raise no_attention(self.framework)

    def attention_probe(
        self,
        inputs: Any,
        layers: Sequence[LayerRef],
        target: Target,
        *,
        gradients: bool,
        head: Callable[[Any], Any] | None = None,
    ) -> Probe:
        """Refuse: attention maps are captured from PyTorch and Keras models only."""
        raise no_attention(self.framework)


def host_labels(target: Any) -> Any:
    """Return a framework tensor given as ``target=`` (a data loader's labels: torch,
    TensorFlow, JAX, on any device) as a NumPy array; anything else as it is."""
    if target is None or isinstance(target, (int, str, Sequence, np.ndarray)) or callable(target):
        return target
    if _is_torch(target) or hasattr(target, "detach"):  # off autograd and the device
        return to_host(target)
    if callable(getattr(target, "numpy", None)):  # TensorFlow
        return np.asarray(target.numpy())
    return target  # JAX and other arrays convert through __array__


def _shape(value: Any) -> tuple[int, ...] | None:
    """Return an array's or tensor's shape (of any library), ``None`` for anything else."""
    shape = getattr(value, "shape", None)
    if shape is None or isinstance(value, (str, bytes)):
        return None
    try:
        return tuple(int(d) for d in shape)
    except TypeError:  # an unknown dimension
        return None


def _listing(entries: Any) -> str:
    """Describe several inputs for a message: each key with its shape or type."""
    described = []
    for key in keys_of(entries):
        shape = _shape(entries[key])
        described.append(f"{key!r}: {shape if shape is not None else type(entries[key]).__name__}")
    return ", ".join(described)


def _explained_key(entries: Any, selector: InputSelector) -> InputKey:
    """Return the key of the explained input: ``selector``, else the only 4-D array."""
    kind = type(entries).__name__
    keys = keys_of(entries)
    if not keys:
        raise BadInputError(f"the inputs are an empty {kind}; pass the model's input batch")
    if selector is None:
        images = [k for k in keys if len(_shape(entries[k]) or ()) == 4]
        if len(images) == 1:
            return images[0]
        found = "none is" if not images else f"{len(images)} are"
        hint = "" if images else " (a list of single images is not a batch: stack them)"
        raise BadInputError(
            f"the inputs are a {kind} of {len(keys)} inputs ({_listing(entries)}) and {found} "
            "a 4-D image batch: pass input= with the index or key of the image input to "
            f"explain{hint}"
        )
    if isinstance(selector, bool) or selector not in keys:
        what = "an index" if not isinstance(entries, dict) else "a key"
        raise BadInputError(
            f"input={selector!r} is not {what} of the inputs, a {kind} of {len(keys)} inputs "
            f"({_listing(entries)}); pass one of {keys}"
        )
    return selector


def prepare_inputs(
    inputs: Any,
    selector: InputSelector,
    image: Callable[[Any, InputKey | None], Any],
    other: Callable[[InputKey, Any], Any],
) -> Any:
    """Normalise a model's inputs once, at a backend's ``prepare``.

    One array or tensor (or a nested list of numbers) is prepared by ``image(inputs, None)``
    and returned as it is. A tuple, list or dict of arrays (or an :class:`Inputs` prepared
    before, whose image was rebuilt on the host) becomes an :class:`Inputs`: the explained
    entry (``selector``, else the only 4-D array) prepared by ``image(value, key)``, every
    other by ``other(key, value)``, which passes it on unchanged but for its placement. Every
    array entry must have the image's batch size.
    """
    if isinstance(inputs, Inputs):
        entries: Any = inputs.entries
        key: InputKey = inputs.key
    elif isinstance(inputs, Mapping) or (
        isinstance(inputs, (tuple, list)) and any(_shape(v) is not None for v in inputs)
    ):
        entries = dict(inputs) if isinstance(inputs, Mapping) else inputs
        key = _explained_key(entries, selector)
    else:
        if selector is not None:
            raise BadInputError(
                f"input={selector!r} picks one of several inputs, and the inputs are a single "
                f"{type(inputs).__name__}; pass the model's inputs as a tuple, list or dict, "
                "or drop input="
            )
        return image(inputs, None)
    prepared = {
        k: image(entries[k], key) if k == key else other(k, entries[k]) for k in keys_of(entries)
    }
    structure: Any = prepared
    if not isinstance(entries, dict):
        values = [prepared[k] for k in keys_of(entries)]
        structure = tuple(values) if isinstance(entries, tuple) else values
    shapes = {k: shape for k in keys_of(entries) if (shape := _shape(prepared[k]))}
    n = shapes[key][0]
    for k, shape in shapes.items():
        if shape[0] != n:
            raise BadInputError(
                f"input {k!r} has shape {shape}, batch size {shape[0]}, and the explained input "
                f"{key!r} has {n} images: every input needs one row per image"
            )
    batched = frozenset(shapes)
    return Inputs(structure, key, batched)


def _describe(raw: Any, is_tensor: Callable[[Any], bool]) -> str:
    items = raw.items() if isinstance(raw, Mapping) else enumerate(raw)
    return ", ".join(
        f"{key!r}: {tuple(v.shape) if is_tensor(v) else type(v).__name__}" for key, v in items
    )


def select_output(raw: Any, selector: OutputSelector, is_tensor: Callable[[Any], bool]) -> Any:
    """Return the tensor to explain from the model's raw output.

    Without a selector a tensor is used as is, and a tuple, list or mapping holding exactly one
    tensor gives that tensor; anything else needs ``output=``.
    """
    if selector is None:
        if is_tensor(raw):
            return raw
        if isinstance(raw, (tuple, list, Mapping)):
            values = raw.values() if isinstance(raw, Mapping) else raw
            tensors = [v for v in values if is_tensor(v)]
            if len(tensors) == 1:
                return tensors[0]
            raise UnsupportedModelError(
                f"the model returned a {type(raw).__name__} ({_describe(raw, is_tensor)}); pass "
                "output= with the index or key of the output to explain, or a function of it"
            )
        raise UnsupportedModelError(
            f"the model returned a {type(raw).__name__}, not a tensor; pass output= a function "
            "that returns the tensor to explain"
        )
    if callable(selector):
        out = selector(raw)
    elif isinstance(raw, (tuple, list, Mapping)):
        try:
            out = raw[selector]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            raise UnsupportedModelError(
                f"output={selector!r} does not select anything from the model's "
                f"{type(raw).__name__} ({_describe(raw, is_tensor)})"
            ) from None
    else:
        raise UnsupportedModelError(
            f"output={selector!r} was given but the model returned a single "
            f"{type(raw).__name__}; drop output= or pass a function"
        )
    if not is_tensor(out):
        raise UnsupportedModelError(
            f"output={selector!r} selected a {type(out).__name__}, not a tensor"
        )
    return out


#: One layer call recorded by a backend, in the order calls finish: the layer's name, the layer,
#: its output shape (``None`` or ``()`` for an output that is not a tensor).
Finished: TypeAlias = "tuple[str, Any, tuple[int, ...] | None]"
#: ``(name, layer, output shape) -> its layout on the image grid``; ``None`` for an output that
#: is not a tensor or a layer run more than once; raises ``LayerError`` when the output has no
#: grid camlens can tell (no spatial extent, an ambiguous layout or token grid).
LayoutOf: TypeAlias = "Callable[[str, Any, tuple[int, ...] | None], Layout | None]"


@dataclass(frozen=True)
class LayerRules:
    """What a backend says about its layers, for the automatic pick and the listing.

    Attributes:
        layout_of: A recorded call's layout (see :data:`LayoutOf`).
        is_norm: Whether a layer is a normalisation layer (``LayerNorm``, ``RMSNorm``...).
        parent: The name of the layer that holds a layer (``""`` at the top).
        convention: The framework's own layout of feature maps (``"nchw"`` for torch).
        outputs: The layers whose output is the model's own output (a dense head's logits
            map): what is explained, not a layer to explain it by, so the pick skips them.
        is_attention: Whether a layer is a transformer block's attention (its output, not its
            probabilities): where one layer holds several blocks' norms (a flat graph), the
            last block's first norm is the last norm before the last attention layer.
    """

    layout_of: LayoutOf
    is_norm: Callable[[Any], bool]
    parent: Callable[[str], str]
    convention: str
    outputs: frozenset[str] = frozenset()
    is_attention: Callable[[Any], bool] = lambda _: False


def auto_pick(finished: Sequence[Finished], rules: LayerRules) -> LayerRef | None:
    """Return the layer camlens explains when none is given, from one recorded pass.

    The last layer to finish with an explainable output of more than one position, unless that
    output is tokens (or channels-last where the framework is channels-first): then the model is
    a transformer, and the pick is the first normalisation layer of the last block (a block is
    a layer that directly holds two or more of the normalisation layers with token outputs),
    as the peers recommend: after the last block only the class token reaches the head.
    Where that layer holds more than two such norms and attention layers ran (a flat graph:
    every block's layers side by side, as a functional Keras ViT is written, or each kind of
    layer in a list of its own), the last block's first norm is the last norm to finish before
    the last attention layer does.
    Without such blocks, the last explainable layer.

    Raises:
        LayerError: Token outputs ``(N, L, C)`` come after the last explainable layer but their
            grid cannot be told: picking that earlier layer (a patch embedding) would explain
            the wrong thing, so the error says what to pass instead.
    """
    usable: list[tuple[str, Any, Layout]] = []
    unresolved: list[tuple[int, LayerError]] = []
    for i, (name, layer, shape) in enumerate(finished):
        if name in rules.outputs:
            continue
        try:
            layout = rules.layout_of(name, layer, shape)
        except LayerError as exc:
            if shape is not None and len(shape) == 3 and shape[2] > 1:  # not pooled (N, C, 1)
                unresolved.append((i, exc))
            continue
        if layout is not None and layout.grid is not None and layout.grid[0] * layout.grid[1] > 1:
            usable.append((name, layer, layout))
            unresolved = []
    if unresolved:
        raise LayerError(
            f"the model has token layers after its last explainable layer, and camlens cannot "
            f"place them on the image grid: {unresolved[-1][1]}"
        )
    if not usable:
        return None
    last_name, last_layer, last_layout = usable[-1]
    if last_layout.kind == rules.convention:
        return LayerRef(last_name, last_layer)
    norms = [
        (name, layer)
        for name, layer, layout in usable
        if layout.kind != rules.convention and rules.is_norm(layer)
    ]
    held = Counter(rules.parent(name) for name, _ in norms)
    blocks = [rules.parent(name) for name, _ in norms if held[rules.parent(name)] >= 2]
    if not blocks:
        return LayerRef(last_name, last_layer)
    inside = [(name, layer) for name, layer in norms if rules.parent(name) == blocks[-1]]
    attention = [i for i, (_, layer, _) in enumerate(finished) if rules.is_attention(layer)]
    if len(inside) > 2 and attention:
        order = {name: i for i, (name, _, _) in enumerate(finished)}
        before = [(n, layer) for n, layer in norms if order[n] < attention[-1]]
        if before:
            return LayerRef(*before[-1])
    return LayerRef(*inside[0])


def describe_layers(
    layers: Iterable[tuple[str, Any]], finished: Sequence[Finished], rules: LayerRules
) -> list[LayerInfo]:
    """Return a :class:`LayerInfo` per ``(name, layer)``, from one recorded pass."""
    try:
        picked = auto_pick(finished, rules)
    except LayerError:
        picked = None
    first: dict[str, tuple[int, ...] | None] = {}
    for name, _, shape in finished:
        first.setdefault(name, shape)
    rows = []
    for name, layer in layers:
        shape = first.get(name)
        try:
            layout = rules.layout_of(name, layer, shape) if name in first else None
        except LayerError:
            layout = None
        rows.append(
            LayerInfo(
                name=name,
                type=type(layer).__name__,
                output_shape=(None, *(int(d) for d in shape[1:])) if shape else None,
                candidate=layout is not None
                and layout.grid is not None
                and layout.grid[0] * layout.grid[1] > 1,
                auto=picked is not None and picked.name == name,
                layout=None if layout is None else layout.describe(),
            )
        )
    return rows
