"""eigen_smooth (first principal component of the weighted activations) and aug_smooth."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

import camlens
from nets import NonLinearHead as NonLinear
from nets import TrunkHead


def _first_component(terms: np.ndarray) -> np.ndarray:
    """Project each row's (h*w, K) terms on their top right singular vector (SVD, uncentred)."""
    out = []
    for item in terms:
        k, h, w = item.shape
        mat = item.reshape(k, h * w).T
        proj = mat @ np.linalg.svd(mat, full_matrices=False)[2][0]
        out.append((proj if proj.sum() >= 0 else -proj).reshape(h, w))
    return np.stack(out)


def _acts_grads(net: TrunkHead, x: torch.Tensor, cls: int) -> tuple[np.ndarray, np.ndarray]:
    net.eval()
    with torch.no_grad():
        a = net.trunk(x).double()
    a.requires_grad_(True)
    (g,) = torch.autograd.grad(net.double().head(a)[:, cls].sum(), a)
    net.float()
    return a.detach().numpy(), g.numpy()


#: Each method's terms w_k ⊙ A^k, from its paper's formula.
TERMS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "gradcam": lambda a, g: g.mean(axis=(2, 3), keepdims=True) * a,
    "hirescam": lambda a, g: g * a,
    "layercam": lambda a, g: np.maximum(g, 0) * a,
    "gradcam-elementwise": lambda a, g: np.maximum(g * a, 0),
    "cam": lambda a, g: g.sum(axis=(2, 3), keepdims=True) * a,  # w_ck on GAP + linear
}


@pytest.mark.parametrize("method", sorted(TERMS))
def test_eigen_smooth_is_the_first_component_of_the_weighted_activations(method: str) -> None:
    net = TrunkHead()
    x = torch.randn(3, 3, 16, 12)
    a, g = _acts_grads(net, x, 1)
    exp = camlens.explain(net, x, method=method, layer="trunk", target=1, eigen_smooth=True)
    expected = _first_component(TERMS[method](a, g))
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    plain = camlens.explain(net, x, method=method, layer="trunk", target=1)
    assert not np.allclose(plain.raw, exp.raw, atol=1e-3 * np.abs(plain.raw).max())


def test_eigen_smooth_of_ablationcam_uses_its_channel_weights() -> None:
    # GAP + linear: zeroing channel k lowers y_c by v_ck mean(A^k), so w_k = v_ck mean(A^k) / y_c.
    net = TrunkHead()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        a = net.eval().trunk(x).double().numpy()
    v = net.fc.weight.detach().double().numpy()[3]
    y = a.mean(axis=(2, 3)) @ v + float(net.fc.bias[3].detach())
    w = v * a.mean(axis=(2, 3)) / y[:, None]
    exp = camlens.explain(net, x, method="ablationcam", layer="trunk", target=3, eigen_smooth=True)
    expected = _first_component(w[:, :, None, None] * a)
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("method", ["eigencam", "eigengradcam", "fem", "kpcacam"])
def test_eigen_smooth_refuses_methods_without_channel_weights(method: str) -> None:
    with pytest.raises(camlens.MethodError, match="weighs no channels"):
        camlens.Explainer(TrunkHead(), "trunk", method=method, eigen_smooth=True)


def test_eigen_smooth_works_with_a_users_weight_method() -> None:
    class MaxGrad(camlens.methods.Method):
        name = "maxgrad"

        def weights(self, activations, gradients):  # type: ignore[no-untyped-def]
            return gradients.amax(dim=(2, 3))

    net = TrunkHead()
    x = torch.randn(2, 3, 16, 16)
    a, g = _acts_grads(net, x, 0)
    exp = camlens.explain(net, x, method=MaxGrad(), layer="trunk", target=0, eigen_smooth=True)
    expected = _first_component(g.max(axis=(2, 3), keepdims=True) * a)
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def _equivariant_net() -> torch.nn.Sequential:
    """1x1 conv (no bias), ReLU, GAP, linear (no bias): Grad-CAM commutes with flips and
    scales by a positive factor (A scales with the input, the gradient does not change)."""
    torch.manual_seed(3)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 1, bias=False),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3, bias=False),
    )
    with torch.no_grad():
        net[4].weight.abs_()  # every channel counts for: maps with positive evidence
    return net


def test_aug_smooth_changes_nothing_where_the_map_commutes_with_the_augmentations() -> None:
    net = _equivariant_net()
    x = torch.randn(2, 3, 9, 7)
    plain = camlens.explain(net, x, layer="1", target=[0, 2])
    smooth = camlens.explain(net, x, layer="1", target=[0, 2], aug_smooth=True)
    np.testing.assert_allclose(smooth.maps, plain.maps, atol=1e-6)
    np.testing.assert_allclose(smooth.scores, plain.scores)


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_aug_smooth_averages_the_mapped_back_maps_of_six_inputs(method: str) -> None:
    # Written apart from the option: explain each flipped / scaled input for the same classes,
    # flip its maps back, average, min-max normalise.
    net = NonLinear()
    x = torch.randn(2, 3, 16, 16)
    units = camlens.explain(net, x, method=method, layer="trunk").units.tolist()
    maps, raws = [], []
    for flip in (False, True):
        for factor in (0.9, 1.0, 1.1):
            xa = torch.flip(x * factor, dims=[3]) if flip else x * factor
            e = camlens.explain(net, xa, method=method, layer="trunk", target=units)
            maps.append(e.maps[..., ::-1] if flip else e.maps)
            raws.append(e.raw[..., ::-1] if flip else e.raw)
    mean = np.mean(maps, axis=0)
    lo, hi = mean.min(axis=(1, 2), keepdims=True), mean.max(axis=(1, 2), keepdims=True)
    got = camlens.explain(net, x, method=method, layer="trunk", aug_smooth=True)
    np.testing.assert_array_equal(got.units, units)
    np.testing.assert_allclose(got.maps, (mean - lo) / (hi - lo), atol=1e-5)
    np.testing.assert_allclose(got.raw, np.mean(raws, axis=0), rtol=1e-5, atol=1e-6)
