"""Real transformer architectures from ``transformers``, built from configs with random weights
(seeded, nothing downloaded): each explained on its token or channels-last layers, the maps
equal to the formulas written here on the layer's output reshaped by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import camlens  # noqa: E402
from vits import TINY_VIT, eigencam_raw, tokens_to_grid  # noqa: E402


def _vit() -> torch.nn.Module:
    config = transformers.ViTConfig(**TINY_VIT, num_labels=5)
    return transformers.ViTForImageClassification(config)


def _deit() -> torch.nn.Module:
    config = transformers.DeiTConfig(**TINY_VIT, num_labels=5)
    return transformers.DeiTForImageClassificationWithTeacher(config)


def _swin() -> torch.nn.Module:
    config = transformers.SwinConfig(
        image_size=32,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1],
        num_heads=[2, 2],
        window_size=4,
        num_labels=5,
    )
    return transformers.SwinForImageClassification(config)


def _convnext() -> torch.nn.Module:
    # layer_scale 1: with the default 1e-6 a random block barely changes its input, and
    # ablating its channels moves the logits by float32 rounding only.
    config = transformers.ConvNextConfig(
        num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5, layer_scale_init_value=1.0
    )
    return transformers.ConvNextForImageClassification(config)


def _build(make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(0)
    return make().eval()


def _module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    return dict(model.named_modules())[name]


def _captured(
    model: torch.nn.Module, layer: str, x: torch.Tensor, classes: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The layer's output and the gradient of each image's class logit w.r.t. it, by hand."""
    store: list[torch.Tensor] = []
    handle = _module(model, layer).register_forward_hook(lambda m, a, out: store.append(out))
    try:
        logits = model(x).logits
    finally:
        handle.remove()
    score = logits[torch.arange(len(x)), torch.tensor(classes)].sum()
    (grad,) = torch.autograd.grad(score, store[0])
    return store[0].detach().double().numpy(), grad.double().numpy()


def _nhwc_to_grid(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 3, 1, 2)


# name, builder, explained layer, automatic layer, to (N, K, h, w) by hand
CASES: list[tuple[str, Callable[[], torch.nn.Module], str, str, Callable[[np.ndarray], Any]]] = [
    (
        "vit",
        _vit,
        "vit.layers.1.layernorm_before",
        "vit.layers.1.layernorm_before",
        lambda a: tokens_to_grid(a, 1, (4, 4)),
    ),
    (
        "deit",  # a class and a distillation token before the patches
        _deit,
        "deit.layers.0.layernorm_before",
        "deit.layers.1.layernorm_before",
        lambda a: tokens_to_grid(a, 2, (4, 4)),
    ),
    (
        "swin",  # no prefix token; the last stage's 4x4 grid
        _swin,
        "swin.layernorm",
        "swin.encoder.layers.1.blocks.0.layernorm_before",
        lambda a: tokens_to_grid(a, 0, (4, 4)),
    ),
    (
        "convnext",  # the block's norm is channels-last inside a channels-first network
        _convnext,
        "convnext.encoder.stages.1.layers.0.layernorm",
        "convnext.encoder.stages.1",
        _nhwc_to_grid,
    ),
]

# Grad-CAM (Selvaraju et al.), HiResCAM (Draelos & Carin) and LayerCAM (Jiang et al.) before
# their ReLU, from the activations A and gradients G on the grid, (N, K, h, w).
FORMULAS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "gradcam": lambda a, g: (g.mean(axis=(2, 3), keepdims=True) * a).sum(axis=1),
    "hirescam": lambda a, g: (g * a).sum(axis=1),
    "layercam": lambda a, g: (np.maximum(g, 0) * a).sum(axis=1),
}


def _images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("method", sorted(FORMULAS))
@pytest.mark.parametrize(
    ("arch", "make", "layer", "auto", "to_grid"), CASES, ids=[c[0] for c in CASES]
)
def test_gradient_methods_equal_their_formula_on_the_reshaped_layer(
    arch: str, make: Any, layer: str, auto: str, to_grid: Any, method: str
) -> None:
    model = _build(make)
    x = _images()
    classes = [1, 4]
    exp = camlens.explain(model, x, method=method, layer=layer, target=classes, output="logits")
    a, g = _captured(model, layer, x, classes)
    ref = FORMULAS[method](to_grid(a), to_grid(g))
    assert exp.raw.shape == ref.shape and exp.maps.shape == (2, 32, 32), arch
    np.testing.assert_allclose(exp.raw, ref, atol=1e-5 * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize(
    ("arch", "make", "layer", "auto", "to_grid"), CASES, ids=[c[0] for c in CASES]
)
def test_eigen_cam_equals_its_formula_and_the_automatic_layer_is_the_last_block(
    arch: str, make: Any, layer: str, auto: str, to_grid: Any
) -> None:
    model = _build(make)
    x = _images()
    exp = camlens.explain(model, x, method="eigencam", layer=layer, output="logits")
    a, _ = _captured(model, layer, x, [0, 0])
    np.testing.assert_allclose(exp.raw, eigencam_raw(to_grid(a)), atol=1e-5)
    cam = camlens.GradCAM(model, output="logits")
    cam(x[:1])
    assert cam.layers == (auto,), arch
    rows = {row.name: row for row in camlens.layers(model, input_size=(32, 32))}
    assert rows[auto].auto and rows[auto].candidate


@pytest.mark.parametrize(
    ("make", "layer", "channels_last"),
    [
        (_swin, "swin.layernorm", False),
        (_convnext, "convnext.encoder.stages.1.layers.0.layernorm", True),
    ],
    ids=["swin-tokens", "convnext-nhwc"],
)
def test_ablation_cam_equals_its_definition_with_the_layer_zeroed_by_hand(
    make: Any, layer: str, channels_last: bool
) -> None:
    model = _build(make)
    x = _images(1)
    exp = camlens.explain(model, x, method="ablationcam", layer=layer, target=2, output="logits")
    module = _module(model, layer)
    with torch.no_grad():
        store: list[torch.Tensor] = []
        handle = module.register_forward_hook(lambda m, a, out: store.append(out))
        y = float(model(x).logits[0, 2])
        handle.remove()
        acts = store[0]
        weights = []
        for k in range(acts.shape[-1]):
            ablated = acts.clone()
            ablated[..., k] = 0  # channel k: the last axis of tokens and channels-last maps

            def replace(m: Any, a: Any, out: Any, ablated: torch.Tensor = ablated) -> Any:
                return ablated

            handle = module.register_forward_hook(replace)
            weights.append((y - float(model(x).logits[0, 2])) / y)
            handle.remove()
    a = acts.double().numpy()
    grid = _nhwc_to_grid(a) if channels_last else tokens_to_grid(a, 0, (4, 4))
    ref = (np.array(weights)[None, :, None, None] * grid).sum(axis=1)
    np.testing.assert_allclose(exp.raw, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_the_model_is_left_as_found() -> None:
    model = _build(_vit)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())
    x = _images()
    for method in ("gradcam", "eigencam", "scorecam"):
        camlens.explain(model, x, method=method, output="logits")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert hooks == sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())
    assert not model.training and all(p.grad is None for p in model.parameters())
