"""Pixel-level methods on PyTorch: Saliency, SmoothGrad, Guided Backprop and Guided Grad-CAM.

References are written here from the papers' formulas: analytic gradients of tiny hand-built
networks in NumPy, and autograd with the ReLU rule rewritten by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import camlens
from camlens.metrics import sanity_check

pytestmark = pytest.mark.filterwarnings("ignore::camlens.MapStrengthWarning")


def _mlp(seed: int = 0) -> nn.Sequential:
    """``x (3, 4, 4) -> Linear(48, 8) -> ReLU -> Linear(8, 3)``: gradients by hand."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.ReLU(), nn.Linear(8, 3))


def _convnet(seed: int = 0, *, inplace: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def _hand_gradients(net: nn.Sequential, x: np.ndarray, c: int, *, guided: bool) -> np.ndarray:
    """``dy_c/dx`` of ``_mlp`` for one ``(3, 4, 4)`` image, by the chain rule in NumPy."""
    w1 = net[1].weight.detach().numpy().astype(np.float64)
    b1 = net[1].bias.detach().numpy().astype(np.float64)
    w2 = net[3].weight.detach().numpy().astype(np.float64)
    z = w1 @ x.reshape(-1).astype(np.float64) + b1
    upstream = np.maximum(w2[c], 0.0) if guided else w2[c]  # guided: positive gradients only
    return (w1.T @ ((z > 0) * upstream)).reshape(x.shape)


def test_saliency_is_the_input_gradients_magnitude_by_hand() -> None:
    net = _mlp()
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 4)).astype(np.float32)
    exp = camlens.explain(net, x, method="saliency", target=1, normalize="none")
    assert exp.layers == ("input",)
    for i in range(2):
        want = np.abs(_hand_gradients(net, x[i], 1, guided=False)).max(axis=0)
        np.testing.assert_allclose(exp.raw[i], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(exp.maps[i], want, rtol=1e-5, atol=1e-6)


def test_guided_backprop_lets_only_positive_gradients_through_relus_by_hand() -> None:
    net = _mlp(3)
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 4)).astype(np.float32)
    exp = camlens.explain(net, x, method="guidedbackprop", target=0, normalize="none")
    for i in range(2):
        guided = np.abs(_hand_gradients(net, x[i], 0, guided=True)).max(axis=0)
        plain = np.abs(_hand_gradients(net, x[i], 0, guided=False)).max(axis=0)
        np.testing.assert_allclose(exp.raw[i], guided, rtol=1e-5, atol=1e-6)
        assert not np.allclose(guided, plain)  # the guide changed something


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward is ``1[x > 0] * max(grad, 0)`` (Springenberg et al.)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)  # type: ignore[attr-defined]
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return (x > 0).to(grad.dtype) * grad.clamp(min=0)


def _reference_gradients(
    net: nn.Sequential, x: torch.Tensor, c: int, *, guided: bool
) -> torch.Tensor:
    """Autograd through the layers one by one, ReLUs replaced by the guided rule if asked."""
    h = x.clone().requires_grad_(True)
    out = h
    for layer in net:
        if isinstance(layer, nn.ReLU) and guided:
            out = _GuidedReLU.apply(out)
        elif isinstance(layer, nn.ReLU):
            out = torch.relu(out)
        else:
            out = layer(out)
    (grad,) = torch.autograd.grad(out[:, c].sum(), h)
    return grad


@pytest.mark.parametrize("inplace", [False, True])
def test_guided_backprop_equals_a_guided_relu_network_on_a_convnet(inplace: bool) -> None:
    net = _convnet(4, inplace=inplace)
    x = torch.randn(3, 3, 10, 10, generator=torch.Generator().manual_seed(5))
    exp = camlens.explain(net, x, method="guidedbackprop", target=2, normalize="none")
    want = _reference_gradients(net, x, 2, guided=True).abs().amax(1).numpy()
    np.testing.assert_allclose(exp.raw, want, rtol=1e-5, atol=1e-7)


def test_smoothgrad_averages_gradients_of_noisy_copies_then_takes_the_magnitude() -> None:
    net = _convnet(6)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    samples, level, seed = 5, 0.2, 3
    exp = camlens.explain(
        net,
        x,
        method="smoothgrad",
        samples=samples,
        noise_level=level,
        seed=seed,
        target=1,
        normalize="none",
    )
    # The documented noise: seed-per-copy unit normals in (C, H, W), scaled by each image's
    # value range times the noise level.
    spread = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).reshape(-1, 1, 1, 1)
    total = torch.zeros_like(x)
    for m in range(samples):
        unit = np.random.default_rng([seed, m]).standard_normal((3, 8, 8)).astype(np.float32)
        noisy = x + level * spread * torch.from_numpy(unit)
        total += _reference_gradients(net, noisy, 1, guided=False)
    want = (total / samples).abs().amax(1).numpy()
    np.testing.assert_allclose(exp.raw, want, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "target",
    [1, [0, 2, 3], camlens.TopK(2), camlens.Output(2, sign=-1)],
    ids=["one-class", "class-per-image", "top2", "output-down"],
)
@pytest.mark.parametrize("method", ["smoothgrad", "smoothgradcam++"])
def test_noisy_copies_batched_give_the_maps_of_one_copy_per_pass(
    method: str, target: object
) -> None:
    net = _convnet(9)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    layer = None if method == "smoothgrad" else "2"
    raws = [
        camlens.explain(
            net,
            x,
            method=method,
            layer=layer,
            samples=5,
            batch_size=b,
            target=target,
            normalize="none",
        ).raw
        for b in (1, 2, 5, None)
    ]
    assert np.abs(raws[0]).max() > 0
    for raw in raws[1:]:
        np.testing.assert_allclose(raw, raws[0], rtol=1e-5, atol=1e-7)


def test_noisy_copies_are_stacked_into_one_pass_up_to_batch_size() -> None:
    net = _convnet(10)
    calls: list[int] = []
    handle = net.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    try:
        x = torch.randn(2, 3, 8, 8)
        camlens.explain(net, x, method="smoothgrad", samples=5, batch_size=3, target=[1, 2])
    finally:
        handle.remove()
    # The input's own pass, then copies 0-2 and 3-4 of both images.
    assert calls == [2, 6, 4]


def test_smoothgrad_equals_saliency_where_the_gradient_is_constant() -> None:
    # A linear model's input gradient is the same at every point: noise cannot change it.
    torch.manual_seed(8)
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    x = torch.randn(2, 3, 4, 4)
    smooth = camlens.explain(net, x, method="smoothgrad", samples=7, target=2, normalize="none")
    plain = camlens.explain(net, x, method="saliency", target=2, normalize="none")
    np.testing.assert_allclose(smooth.raw, plain.raw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        plain.raw[0], net[1].weight[2].detach().abs().reshape(3, 4, 4).amax(0).numpy()
    )


def test_guided_gradcam_is_the_gradcam_map_times_the_guided_gradient() -> None:
    net = _convnet(9)
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(10))
    exp = camlens.explain(net, x, method="guidedgradcam", layer="2", target=3)
    # Grad-CAM by hand: channel weights = spatial mean of the gradient at the layer.
    acts = net[:3](x).detach().requires_grad_(True)
    (grads,) = torch.autograd.grad(net[3:](acts)[:, 3].sum(), acts)
    cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True))
    up = torch.nn.functional.interpolate(cam, size=(12, 12), mode="bilinear")[:, 0]
    lo, hi = up.amin(dim=(1, 2), keepdim=True), up.amax(dim=(1, 2), keepdim=True)
    gradcam = (up - lo) / (hi - lo)
    guided = _reference_gradients(net, x, 3, guided=True).abs().amax(1)
    product = (gradcam * guided).detach().numpy()
    np.testing.assert_allclose(exp.raw, product, rtol=1e-4, atol=1e-6)
    lo2, hi2 = product.min(axis=(1, 2), keepdims=True), product.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(exp.maps, (product - lo2) / (hi2 - lo2), atol=1e-5)
    assert exp.layers == ("2",)


def test_guided_passes_leave_no_hooks_and_the_model_as_found() -> None:
    net = _convnet(11, inplace=True)
    net.train()
    x = torch.randn(1, 3, 8, 8)
    for method in ("guidedbackprop", "guidedgradcam", "saliency"):
        camlens.explain(net, x, method=method)
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
        assert net.training and all(p.grad is None for p in net.parameters())
    assert torch.is_grad_enabled()


def test_a_model_without_relu_modules_is_refused_for_guided_backprop() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 3, 6, 6))
    with pytest.raises(camlens.MethodError, match=r"no.*ReLU|none"):
        camlens.explain(net, torch.randn(1, 3, 6, 6), method="guidedbackprop")
    assert all(not m._forward_hooks for m in net.modules())


def test_a_pixel_level_method_refuses_a_layer() -> None:
    with pytest.raises(camlens.LayerError, match="input's pixels"):
        camlens.explain(_convnet(), torch.randn(1, 3, 8, 8), method="saliency", layer="2")


def test_guided_backprop_fails_the_randomisation_sanity_check_where_gradcam_passes() -> None:
    # Adebayo et al. (2018): guided backprop's maps survive re-initialising the top layers.
    torch.manual_seed(12)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    )
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(13))
    top = ["8", "4"]  # the head and the last convolution, from the output down
    guided = sanity_check(net, x, method="guidedbackprop", layers=top)
    gradcam = sanity_check(net, x, method="gradcam", layer="4", layers=top)
    guided_rho = guided.correlations.mean(axis=1)
    gradcam_rho = gradcam.correlations.mean(axis=1)
    assert (guided_rho > 0.5).all(), guided_rho
    assert (guided_rho > gradcam_rho + 0.3).all(), (guided_rho, gradcam_rho)
