"""One probe of a torch model: capture layer activations, target scores and their gradients.

The autograd graph starts at the target layers: the model runs with gradients disabled and the
first target layer's hook enables them for the rest of the pass, so nothing below the layers
records history (no graph, no saved tensors, no parameter flags to toggle), and
``torch.autograd.grad`` asks only for the activations' gradients, so no parameter gradient is
formed above them either. Hooks and modes live for this call only; the hooks act only in the
calling thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from camlens.backends._common import select_output
from camlens.backends._layout import Layout, LayoutName, LayoutSpec, layout_for
from camlens.backends.base import (
    INPUT,
    BiasGradients,
    Inputs,
    LayerRef,
    OutputSelector,
    Probe,
    image_of,
    with_image,
)
from camlens.backends.torch._arrays import namespace, to_numpy
from camlens.backends.torch._biases import BiasCapture
from camlens.backends.torch._forward import call_model, recordable, this_thread, usable
from camlens.backends.torch._layers import evidence, hint
from camlens.backends.torch._state import inference_state
from camlens.backends.torch._targets import detection_scores, resolve
from camlens.errors import LayerError, MethodError
from camlens.targets import Detection, Target


def _capture_hook(
    ref: LayerRef,
    slot: list[Any],
    grads: bool,
    find_layout: Callable[[LayerRef, tuple[int, ...]], Layout],
) -> Any:
    """Capture the layer's output in ``slot[0]`` and its layout in ``slot[1]``."""

    def hook(module: torch.nn.Module, args: Any, out: Any) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise LayerError(
                f"layer {ref.name!r} returns a {type(out).__name__}, not a feature map tensor; "
                "pick a layer with an (N, C, H, W) or token (N, L, C) output"
            )
        if slot[0] is not None:
            raise LayerError(
                f"layer {ref.name!r} is called more than once in one forward pass (a shared "
                "module); pick a layer the model calls once, e.g. the block that contains it"
            )
        slot[1] = find_layout(ref, tuple(out.shape))
        if grads:
            # From here on the pass records history (restored when the probe's
            # ``set_grad_enabled`` block exits).
            torch.set_grad_enabled(True)
        captured = out.detach().requires_grad_(True) if grads and not out.requires_grad else out
        slot[0] = captured
        # The rest of the network works on a copy, so its in-place ops (ReLU(inplace=True))
        # neither alter the captured values nor hit a leaf that requires grad.
        return captured.clone()

    return hook


class _Guide(torch.autograd.Function):
    """The identity whose backward lets only positive gradients through (guided backprop)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


def _guide_hook(module: torch.nn.Module, args: Any, out: Any) -> Any:
    """At a ReLU's output, guide the gradient (its own backward then masks by ``x > 0``)."""
    if isinstance(out, torch.Tensor) and out.requires_grad:
        return _Guide.apply(out)  # type: ignore[no-untyped-call]
    return out


def _guided_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Return the model's ReLU and ReLU6 modules; refuse a model without any."""
    found: list[torch.nn.Module] = [
        m for m in model.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6))
    ]
    if not found:
        raise MethodError(
            "guided backpropagation changes the backward pass at torch.nn.ReLU (and ReLU6) "
            "modules, and this model has none (it may call torch.nn.functional.relu or use "
            "another activation); use saliency or gradcam instead"
        )
    return found


def batched_gradients(
    scores: torch.Tensor,
    acts: list[torch.Tensor],
    layers: Sequence[LayerRef],
    extra: Sequence[torch.Tensor] = (),
) -> list[torch.Tensor]:
    """Return d(score of each row)/d(activations) as ``(N * T, K, h, w)`` per layer.

    Images are independent in eval mode, so one backward of the batch sum gives every image's
    gradient; ``T`` targets per image use one vectorised backward with batched cotangents.
    The gradients at the ``extra`` tensors follow the layers'; where the scores do not depend
    on one of them its gradient is zeros (a layer's absence is an error).
    """
    acts = [*acts, *extra]
    n, t = scores.shape
    if not scores.requires_grad:
        raise LayerError(
            f"the target score does not depend on layer(s) {[ref.name for ref in layers]}; "
            "pick a layer on the path to the explained output"
        )
    grads: Sequence[torch.Tensor | None]
    if t == 1:
        grads = torch.autograd.grad(scores.sum(), acts, allow_unused=True)
    else:
        eye = torch.eye(t, dtype=scores.dtype, device=scores.device)
        batched: Sequence[torch.Tensor | None]
        try:
            batched = torch.autograd.grad(
                scores,
                acts,
                grad_outputs=eye[:, None, :].expand(t, n, t),
                is_grads_batched=True,
                allow_unused=True,
            )
        except (RuntimeError, NotImplementedError):  # an op without a batching rule: loop
            per_target = [
                torch.autograd.grad(
                    scores[:, j].sum(), acts, retain_graph=j < t - 1, allow_unused=True
                )
                for j in range(t)
            ]
            batched = tuple(
                None if per_target[0][i] is None else torch.stack([p[i] for p in per_target])
                for i in range(len(acts))
            )
        # (T, N, ...) -> (N * T, ...), image-major rows.
        grads = [
            None if g is None else g.transpose(0, 1).reshape(-1, *g.shape[2:]) for g in batched
        ]
    unused = [ref.name for ref, g in zip(layers, grads[: len(layers)], strict=True) if g is None]
    if unused:
        raise LayerError(
            f"the target score does not depend on layer(s) {unused}; pick a layer on the path "
            "to the explained output"
        )
    return [
        torch.zeros((n * t, *a.shape[1:]), dtype=a.dtype, device=a.device) if g is None else g
        for g, a in zip(grads, acts, strict=True)
    ]


def _product(gradient: torch.Tensor, act: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Return ``d(gradient . direction) / d act``, zero where the gradient is constant in it."""
    if not gradient.requires_grad:
        return torch.zeros_like(direction)
    (found,) = torch.autograd.grad(
        gradient, act, grad_outputs=direction, retain_graph=True, allow_unused=True
    )
    return torch.zeros_like(direction) if found is None else found


def hessian_products(
    scores: torch.Tensor, acts: list[torch.Tensor], layers: Sequence[LayerRef]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Return each row's gradient and Hessian-vector product ``H A`` per layer, ``(N * T, ...)``.

    Per target, one backward with ``create_graph=True`` gives the gradients as functions of the
    activations, and per layer a second backward of its gradient, with its activations
    (constant) as cotangents, gives ``sum_j d2y / dA_i dA_j A_j`` within that layer (not the
    cross terms between nested layers). A gradient that does not depend on the activations (the
    score is linear in them) has a zero product. Images are independent, as for the gradients.
    """
    t = scores.shape[1]
    if not scores.requires_grad:
        raise LayerError(
            f"the target score does not depend on layer(s) {[ref.name for ref in layers]}; "
            "pick a layer on the path to the explained output"
        )
    directions = [a.detach() for a in acts]
    grads: list[list[torch.Tensor]] = []
    products: list[list[torch.Tensor]] = []
    for j in range(t):
        first = torch.autograd.grad(scores[:, j].sum(), acts, create_graph=True, allow_unused=True)
        unused = [ref.name for ref, g in zip(layers, first, strict=True) if g is None]
        if unused:
            raise LayerError(
                f"the target score does not depend on layer(s) {unused}; pick a layer on the "
                "path to the explained output"
            )
        g = [x for x in first if x is not None]
        # One second backward per layer: H_ii A_i alone, not the cross terms of nested layers.
        products.append([_product(gi, a, d) for gi, a, d in zip(g, acts, directions, strict=True)])
        grads.append([x.detach() for x in g])

    def rows(per_target: list[list[torch.Tensor]], i: int) -> torch.Tensor:
        # (T, N, ...) -> (N * T, ...), image-major rows.
        stacked = torch.stack([p[i] for p in per_target], dim=1)
        return stacked.reshape(-1, *stacked.shape[2:])

    return (
        [rows(grads, i) for i in range(len(acts))],
        [rows(products, i) for i in range(len(acts))],
    )


def probe(
    model: torch.nn.Module,
    inputs: torch.Tensor | Inputs,
    layers: Sequence[LayerRef],
    target: Target,
    output: OutputSelector,
    *,
    gradients: bool,
    spec: LayoutSpec,
    guided: bool = False,
    biases: bool = False,
    hessian: bool = False,
    declared: dict[str, tuple[LayoutName | None, LayoutName | None]] | None = None,
) -> tuple[Probe, list[Layout]]:
    """Run the model once and return what the layers and the target give, and the layers'
    layouts (the activations and gradients are on the grid, ``(M, K, h, w)``).

    ``declared`` keeps, per layer name, what the layer's modules say of its layout (its
    :func:`evidence` and :func:`hint`, which walk the modules inside it): a backend passes
    the same dict on every call, so the walk is done once per resolved layer.

    A layer that is :data:`INPUT` captures the input batch itself (the explained one of
    several); ``guided`` guides the backward pass at every ``ReLU``/``ReLU6`` module;
    ``biases`` captures the output of every module with a bias for its bias-gradient
    (``_biases.py``); ``hessian`` also takes the Hessian-vector products ``H A``
    (:func:`hessian_products`). Hooks live for this call only.
    """
    if hessian and (guided or biases or not gradients):
        raise MethodError(
            "Hessian-vector products come with the model's own gradients: ask for gradients, "
            "and not for a guided backward pass or bias-gradients"
        )
    slots: list[list[Any]] = [[None, None] for _ in layers]
    at_input = [ref.handle is INPUT.handle for ref in layers]
    guides = _guided_modules(model) if guided else []
    if biases and not (gradients and at_input == [True]):
        raise MethodError(
            "bias-gradients are taken along with the input's gradient: probe [INPUT] with "
            "gradients=True"
        )
    capture = BiasCapture(model) if biases else None
    bias_terms: BiasGradients | None = None
    image = image_of(inputs)
    size = (int(image.shape[-2]), int(image.shape[-1]))

    known = {} if declared is None else declared

    def find_layout(ref: LayerRef, shape: tuple[int, ...]) -> Layout:
        if ref.name not in known:
            known[ref.name] = (evidence(ref.handle), hint(model, ref.name))
        said, nearby = known[ref.name]
        return layout_for(ref.name, shape, int(image.shape[0]), size, spec, said, nearby)

    handles = []
    with inference_state(model):
        try:
            for ref, slot, is_input in zip(layers, slots, at_input, strict=True):
                if is_input:
                    continue
                handles.append(
                    ref.handle.register_forward_hook(
                        this_thread(_capture_hook(ref, slot, gradients, find_layout))
                    )
                )
            handles.extend(m.register_forward_hook(this_thread(_guide_hook)) for m in guides)
            if capture is not None:
                handles.extend(capture.register())
            with recordable():  # the head records its graph from the hooks on
                # ``prepare`` detached the inputs; an inference tensor cannot enter autograd.
                if isinstance(inputs, Inputs):
                    inputs = inputs.map(usable)
                x = usable(image)
                if any(at_input):
                    x = x.detach().requires_grad_(gradients)
                    torch.set_grad_enabled(gradients)
                    for slot, is_input in zip(slots, at_input, strict=True):
                        if is_input:
                            slot[0], slot[1] = x, Layout("nchw")
                raw = call_model(model, with_image(inputs, x))
                if isinstance(target, Detection):  # reads the detector's structured output
                    scores, resolved = detection_scores(target, raw)
                    out = scores.detach()
                else:
                    out = select_output(raw, output, torch.is_tensor)
                    scores, resolved = resolve(target, out)
                missing = [
                    ref.name for ref, slot in zip(layers, slots, strict=True) if slot[0] is None
                ]
                if missing:
                    raise LayerError(f"layer(s) {missing} did not run in the model's forward pass")
                acts = [slot[0] for slot in slots if slot[0] is not None]
                products: list[torch.Tensor] | None = None
                grads: list[torch.Tensor] | None
                if hessian:
                    grads, products = hessian_products(scores, acts, layers)
                elif gradients:
                    extra = capture.tensors if capture is not None else []
                    grads = batched_gradients(scores, acts, layers, extra)
                    if capture is not None:
                        bias_terms = capture.terms(grads[len(acts) :], scores.numel())
                        grads = grads[: len(acts)]
                else:
                    grads = None
        finally:
            for handle in handles:
                handle.remove()
    t = resolved.units.shape[1]
    layouts: list[Layout] = [slot[1] for slot in slots]
    xp = namespace()
    rows = [
        lay.to_grid(a.detach(), xp, ref.name)
        for a, lay, ref in zip(acts, layouts, layers, strict=True)
    ]
    rows = [a if t == 1 else a.repeat_interleave(t, dim=0) for a in rows]
    grid_grads = (
        None
        if grads is None
        else [
            lay.to_grid(g, xp, ref.name) for g, lay, ref in zip(grads, layouts, layers, strict=True)
        ]
    )
    grid_products = (
        None
        if products is None
        else [
            _float(lay.to_grid(h, xp, ref.name))
            for h, lay, ref in zip(products, layouts, layers, strict=True)
        ]
    )
    probe = Probe(
        activations=[_float(a) for a in rows],
        gradients=None if grid_grads is None else [_float(g) for g in grid_grads],
        resolved=resolved,
        outputs=to_numpy(out.float()).reshape(out.shape[0], -1),
        hessian_products=grid_products,
        biases=bias_terms,
    )
    return probe, layouts


def _float(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` in float32 unless it is already float32 or float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
