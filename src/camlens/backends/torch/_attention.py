"""Attention maps of a torch transformer: found, captured and differentiated, for one call.

An *attention layer* is a module whose output is, or holds, a block's attention probabilities
``(N, heads, L, L)``: a ``transformers`` attention module in eager mode (it returns
``(context, weights)``), ``torch.nn.MultiheadAttention`` (asked for per-head weights for the
call: ``need_weights=True, average_attn_weights=False``; its caller still gets the weights it
asked for, none or their mean over heads), or any module returning the
probabilities themselves (the softmax or attention-dropout module of a hand-written block).
The probabilities are the very tensor the block multiplies the values by, so the gradient of a
score with respect to them is the gradient with respect to the attention map.

As in ``_probe``, the network below the first attention layer runs with gradients disabled;
that layer's pre-hook enables them (and, where its input needs no gradient, gives the layer
one that does), so the layers' own probabilities are in the graph. Hooks and modes live for
this call only and act only in the calling thread.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from camlens.backends._common import select_output
from camlens.backends._layout import LayoutSpec, attention_tokens
from camlens.backends.base import Inputs, LayerRef, OutputSelector, Probe, image_of, rows
from camlens.backends.torch._arrays import to_numpy
from camlens.backends.torch._forward import call_model, recordable, this_thread, usable
from camlens.backends.torch._state import inference_state
from camlens.backends.torch._targets import resolve
from camlens.errors import BadInputError, BadTargetError, CamlensError, LayerError
from camlens.targets import Class, Detection, Target, TopK

#: A function of one block's output tokens ``(N, L, C)`` returning the model's output for them.
Head = Callable[[torch.Tensor], Any]

#: How far a row of attention probabilities may sum from 1 (float16 models round).
ROW_TOLERANCE = 1e-2

#: What to do where no attention probabilities can be seen.
ADVICE = (
    "load a transformers model with attn_implementation='eager' (fused SDPA/flash attention "
    "returns no probabilities), call timm.layers.set_fused_attn(False) before building a timm "
    "model, or pass layer= the modules whose outputs are the attention probabilities "
    "(N, heads, L, L), e.g. each block's softmax or attention dropout"
)


def probabilities(out: Any) -> torch.Tensor | None:
    """Return the attention maps in a module's output: itself, or the first item of a tuple or
    list output that is an ``(N, heads, L, L)`` tensor; else ``None``."""
    items: list[Any] = []
    if isinstance(out, torch.Tensor):
        items = [out]
    elif isinstance(out, (tuple, list)):
        items = list(out)
    for item in items:
        if isinstance(item, torch.Tensor) and item.ndim == 4 and item.shape[-1] == item.shape[-2]:
            return item
    return None


class _PerHeadWeights:
    """Ask ``torch.nn.MultiheadAttention`` for its per-head weights for the call, and give the
    caller the output it asked for (``need_weights`` is the layer's 5th argument,
    ``average_attn_weights`` its 7th; both default to true)."""

    def __init__(self) -> None:
        self.asked: dict[int, tuple[bool, bool]] = {}

    def before(self, module: torch.nn.Module, args: Any, kwargs: Any) -> Any:
        """Pre-hook: the call's arguments changed to ask for per-head weights."""
        if not isinstance(module, torch.nn.MultiheadAttention):
            return None
        args, kwargs = list(args), dict(kwargs)
        asked = []
        for index, key, value in ((4, "need_weights", True), (6, "average_attn_weights", False)):
            if len(args) > index:
                asked.append(bool(args[index]))
                args[index] = value
            else:
                asked.append(bool(kwargs.get(key, True)))
                kwargs[key] = value
        self.asked[id(module)] = (asked[0], asked[1])
        return tuple(args), kwargs

    def after(self, module: torch.nn.Module, out: Any) -> Any:
        """Return the output the caller asked for (no weights, or their mean over heads)."""
        asked = self.asked.pop(id(module), None)
        if asked is None:
            return out
        need, average = asked
        weights = None if not need else out[1].mean(dim=1) if average else out[1]
        return out[0], weights


def _differentiable(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """Return the call's arguments with every floating tensor that needs no gradient replaced
    by a detached copy that does (the same tensor given twice, as query and key, stays one)."""
    swapped: dict[int, torch.Tensor] = {}

    def swap(value: Any) -> Any:
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            return value
        if value.requires_grad:
            return value
        if id(value) not in swapped:
            swapped[id(value)] = value.detach().requires_grad_(True)
        return swapped[id(value)]

    return tuple(swap(a) for a in args), {k: swap(v) for k, v in kwargs.items()}


def _source(attention: torch.Tensor) -> torch.Tensor:
    """Return the tensor the block used: ``attention`` itself, or the base it is a plain
    reshape of (``torch.nn.MultiheadAttention`` returns a view of its ``(N * heads, L, L)``
    probabilities, made after it used them)."""
    base = attention._base
    if (
        base is not None
        and attention.is_contiguous()
        and base.is_contiguous()
        and base.numel() == attention.numel()
        and base.data_ptr() == attention.data_ptr()
    ):
        return base
    return attention


def _looks_like_probabilities(t: torch.Tensor) -> bool:
    """Whether every entry is non-negative and every row sums to 1 (a softmax's output)."""
    with torch.no_grad():
        rows = t.float().sum(dim=-1)
        return bool(t.min() >= 0) and bool(((rows - 1).abs() <= ROW_TOLERANCE).all())


def attention_layers(model: torch.nn.Module, inputs: Any) -> tuple[LayerRef, ...]:
    """Return every module whose output holds attention probabilities, in the order they run.

    One image runs through the model with a hook on every submodule (the model is left as
    found). Of modules giving the same tensor (an attention module and the module inside it),
    the innermost is kept; modules called more than once are left out.

    Raises:
        LayerError: No module's output holds attention probabilities.
    """
    found: list[tuple[str, torch.nn.Module, weakref.ref[torch.Tensor]]] = []
    calls: Counter[str] = Counter()
    per_head = _PerHeadWeights()

    def make_hook(name: str) -> Any:
        def hook(module: torch.nn.Module, args: Any, out: Any) -> Any:
            calls[name] += 1
            attention = probabilities(out)
            # An outer module returning the inner module's maps is not another layer.
            if (
                attention is not None
                and _looks_like_probabilities(attention)
                and not any(ref() is attention for _, _, ref in found)
            ):
                found.append((name, module, weakref.ref(attention)))
            return per_head.after(module, out)

        return hook

    handles = []
    with inference_state(model), torch.no_grad():
        try:
            for name, module in model.named_modules():
                if not name:
                    continue
                handles.append(
                    module.register_forward_pre_hook(this_thread(per_head.before), with_kwargs=True)
                )
                handles.append(module.register_forward_hook(this_thread(make_hook(name))))
            call_model(model, rows(inputs, 0, 1))
        finally:
            for handle in handles:
                handle.remove()
    layers = tuple(LayerRef(name, module) for name, module, _ in found if calls[name] == 1)
    if not layers:
        raise LayerError(
            f"found no attention probabilities (N, heads, L, L) in {type(model).__name__}; "
            + ADVICE
        )
    return layers


def probe(
    model: torch.nn.Module,
    inputs: torch.Tensor | Inputs,
    layers: Sequence[LayerRef],
    target: Target,
    output: OutputSelector,
    *,
    gradients: bool,
    spec: LayoutSpec,
    head: Head | None = None,
) -> Probe:
    """Run the model once; return each layer's attention maps ``(M, heads, L, L)`` (one row per
    image and target), their gradients if asked, and the tokens' layout (``Probe.tokens``).

    With ``head``, each layer's gradient is that of its own block's score: ``head`` applied to
    the output tokens of the block holding the layer (its nearest enclosing module returning
    one ``(N, L, C)`` tensor), read for the units the model's output resolved.
    """
    if isinstance(target, Detection):
        raise BadTargetError(
            "attention methods explain a score of the model output; a detection target reads a "
            "detector's structured output: explain a detector with a layer method (gradcam)"
        )
    slots: list[torch.Tensor | None] = [None] * len(layers)
    order: list[int] = []
    per_head = _PerHeadWeights()
    blocks = _enclosing(model, layers) if head is not None and gradients else []
    block_outputs: dict[str, Any] = {}

    def keep(name: str) -> Any:
        def hook(module: torch.nn.Module, args: Any, out: Any) -> None:
            block_outputs.setdefault(name, out)

        return hook

    def pre_hook(index: int) -> Any:
        def hook(module: torch.nn.Module, args: Any, kwargs: Any) -> Any:
            weights = per_head.before(module, args, kwargs)
            args, kwargs = weights if weights is not None else (args, kwargs)
            if not gradients:
                return args, kwargs
            # From here on the pass records history (restored when the probe's
            # ``set_grad_enabled`` block exits).
            torch.set_grad_enabled(True)
            return _differentiable(tuple(args), dict(kwargs))

        return hook

    def capture(index: int) -> Any:
        ref = layers[index]

        def hook(module: torch.nn.Module, args: Any, out: Any) -> Any:
            attention = probabilities(out)
            if attention is None:
                raise LayerError(
                    f"layer {ref.name!r} gives no attention probabilities (N, heads, L, L) "
                    f"(its output: {_describe(out)}); {ADVICE}"
                )
            if slots[index] is not None:
                raise LayerError(
                    f"layer {ref.name!r} is called more than once in one forward pass (a "
                    "shared module); pass the attention layer of each block"
                )
            slots[index] = attention
            order.append(index)
            return per_head.after(module, out)

        return hook

    handles = []
    with inference_state(model):
        try:
            for i, ref in enumerate(layers):
                handles.append(
                    ref.handle.register_forward_pre_hook(this_thread(pre_hook(i)), with_kwargs=True)
                )
                handles.append(ref.handle.register_forward_hook(this_thread(capture(i))))
            for name in dict.fromkeys(n for chain in blocks for n, _ in chain):
                module = model.get_submodule(name)
                handles.append(module.register_forward_hook(this_thread(keep(name))))
            with recordable():
                x = inputs.map(usable) if isinstance(inputs, Inputs) else usable(inputs)
                raw = call_model(model, x)
                out = select_output(raw, output, torch.is_tensor)
                scores, resolved = resolve(target, out)
                missing = [
                    ref.name for ref, slot in zip(layers, slots, strict=True) if slot is None
                ]
                if missing:
                    raise LayerError(f"layer(s) {missing} did not run in the model's forward pass")
                maps = [slot for slot in slots if slot is not None]
                if order != sorted(order):
                    ran = [layers[i].name for i in order]
                    raise LayerError(
                        f"give the attention layers in the order the model runs them: {ran}"
                    )
                unlike = [
                    r.name
                    for r, a in zip(layers, maps, strict=True)
                    if not _looks_like_probabilities(a)
                ]
                if unlike:
                    raise LayerError(
                        f"the outputs of layer(s) {unlike} are not attention probabilities "
                        "(non-negative rows that sum to 1: a softmax's output); pass the "
                        "attention modules, or the modules right after the softmax"
                    )
                if not gradients:
                    grads = None
                elif head is None:
                    grads = _gradients([scores] * len(maps), maps, layers)
                else:
                    fixed = Class(resolved.units.tolist()) if isinstance(target, TopK) else target
                    per_layer = [
                        _block_scores(head, _block_output(chain, block_outputs, a, ref), fixed)
                        for chain, a, ref in zip(blocks, maps, layers, strict=True)
                    ]
                    grads = _gradients(per_layer, maps, layers)
        finally:
            for handle in handles:
                handle.remove()
    image = image_of(inputs)
    size = (int(image.shape[-2]), int(image.shape[-1]))
    batch = int(image.shape[0])
    tokens = attention_tokens(
        [ref.name for ref in layers], [tuple(a.shape) for a in maps], batch, size, spec
    )
    t = resolved.units.shape[1]
    rows = [_float(a.detach()) for a in maps]
    rows = [a if t == 1 else a.repeat_interleave(t, dim=0) for a in rows]
    return Probe(
        activations=rows,
        gradients=None if grads is None else [_float(g) for g in grads],
        resolved=resolved,
        outputs=to_numpy(out.detach().float()).reshape(out.shape[0], -1),
        tokens=tokens,
    )


def _gradients(
    scores: Sequence[torch.Tensor], maps: list[torch.Tensor], layers: Sequence[LayerRef]
) -> list[torch.Tensor]:
    """Return the gradient of each row's score (``scores[i]``, ``(N, T)``, for layer ``i``)
    with respect to each layer's attention maps, ``(M, heads, L, L)``."""
    if any(not m.requires_grad for m in maps):
        raise LayerError(
            f"the attention maps of layer(s) {[r.name for r in layers]} are not differentiable "
            "(computed outside autograd); pass the modules that compute them"
        )
    if any(not s.requires_grad for s in scores):
        raise LayerError(
            f"the target score does not depend on layer(s) {[r.name for r in layers]}; pass "
            "the attention layers of the blocks on the path to the explained output"
        )
    n, t = scores[0].shape
    out = []
    for i, (score, m, ref) in enumerate(zip(scores, maps, layers, strict=True)):
        per_target = []
        for j in range(t):
            last = i == len(maps) - 1 and j == t - 1  # the layers' scores share the graph
            (grad,) = torch.autograd.grad(
                score[:, j].sum(), _source(m), retain_graph=not last, allow_unused=True
            )
            if grad is None:
                raise LayerError(
                    f"the target score does not depend on the attention maps of layer "
                    f"{ref.name!r}; pass the attention layers of the blocks on the path to the "
                    "explained output"
                )
            per_target.append(grad.reshape(m.shape))
        # (N, T, heads, L, L) -> (N * T, heads, L, L): image-major rows.
        out.append(torch.stack(per_target, dim=1).reshape(n * t, *m.shape[1:]))
    return out


def _enclosing(
    model: torch.nn.Module, layers: Sequence[LayerRef]
) -> list[list[tuple[str, torch.nn.Module]]]:
    """Return each layer's enclosing modules, nearest first (the model itself left out)."""
    chains = []
    for ref in layers:
        parts = ref.name.split(".")
        names = [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
        chains.append([(name, model.get_submodule(name)) for name in names])
    return chains


def _block_output(
    chain: list[tuple[str, torch.nn.Module]],
    outputs: dict[str, Any],
    attention: torch.Tensor,
    ref: LayerRef,
) -> torch.Tensor:
    """Return the output tokens ``(N, L, C)`` of the block holding an attention layer: the
    first of its enclosing modules to return one tensor of the maps' batch and tokens."""
    n, _, tokens, _ = attention.shape
    for name, _ in chain:
        out = outputs.get(name)
        if isinstance(out, torch.Tensor) and out.ndim == 3 and tuple(out.shape[:2]) == (n, tokens):
            return out
    raise LayerError(
        f"no module enclosing the attention layer {ref.name!r} returns its block's tokens "
        f"({n}, {tokens}, C), which head= reads; drop head= to explain the model's own score"
    )


def _block_scores(head: Head, tokens: torch.Tensor, target: Target) -> torch.Tensor:
    """Return the target's ``(N, T)`` scores in ``head(tokens)``, a block's own output."""
    try:
        out = head(tokens)
    except CamlensError:
        raise
    except Exception as exc:
        raise BadInputError(
            f"head= raised {type(exc).__name__} on a block's tokens {tuple(tokens.shape)}: {exc}; "
            "it must map (N, L, C) tokens to the model's output, e.g. "
            "lambda t: model.head(model.norm(t)[:, 0])"
        ) from exc
    if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != tokens.shape[0]:
        raise BadInputError(
            f"head= returned {_describe(out)} for tokens {tuple(tokens.shape)}; it must return "
            "the model's output for them, (N, ...) with the same N"
        )
    return resolve(target, out)[0]


def _describe(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        parts = [
            str(tuple(item.shape)) if isinstance(item, torch.Tensor) else repr(item) for item in out
        ]
        return f"a {type(out).__name__} of {', '.join(parts)}"
    return type(out).__name__


def _float(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` in float32 unless it is already float32 or float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
