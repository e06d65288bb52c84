"""ShapleyCAM: weights ``mean_ij (g - 1/2 H A)`` from the gradient and a Hessian-vector product."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import camlens
from nets import TrunkHead


class SmoothNet(nn.Module):
    """conv -> softplus (the explained layer's input) -> conv -> tanh -> linear -> softmax."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.trunk = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.Softplus())
        self.post = nn.Sequential(nn.Conv2d(5, 4, 3, padding=1), nn.Tanh())
        self.fc = nn.Linear(4 * 6 * 7, 4)

    def head(self, a: torch.Tensor) -> torch.Tensor:
        """The network after the layer: logits from the layer's output."""
        return self.fc(torch.flatten(self.post(a), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.trunk(x)), dim=-1)


def _reference(
    score: object, acts: torch.Tensor, units: list[list[int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps ``sum_k mean_ij (g - H A / 2) A_k``, the products ``H A`` and the terms
    ``w_k A_k``, row by row, from ``torch.autograd.functional.hvp`` of ``score(a, unit)`` for
    one image's activations."""
    maps, products, terms = [], [], []
    for n, row in enumerate(units):
        a = acts[n : n + 1].detach()
        for unit in row:

            def f(z: torch.Tensor, unit: int = unit) -> torch.Tensor:
                return score(z, unit)  # type: ignore[operator, no-any-return]

            _, ha = torch.autograd.functional.hvp(f, a, v=a)
            g = torch.autograd.functional.vjp(f, a)[1]
            w = (g - ha / 2).mean(dim=(2, 3), keepdim=True)
            maps.append((w * a).sum(dim=1)[0].numpy())
            products.append(ha[0].numpy())
            terms.append((w * a)[0].numpy())
    return np.stack(maps), np.stack(products), np.stack(terms)


def test_shapleycam_matches_an_hvp_reference_through_a_softmax() -> None:
    net = SmoothNet().double().eval()
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    units = [[0, 2], [0, 2]]
    exp = camlens.ShapleyCAM(net, "trunk", relu=False, normalize="none")(x, target=units)
    with torch.no_grad():
        acts = net.trunk(x)

    def probability(a: torch.Tensor, unit: int) -> torch.Tensor:
        return torch.softmax(net.head(a), dim=-1)[0, unit]

    expected, products, _ = _reference(probability, acts, units)
    assert np.abs(products).max() > 1e-3  # the softmax makes the score curved at the layer
    scale = np.abs(expected).max()
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(exp.scores, net(x).detach().numpy()[:, [0, 2]].ravel(), rtol=1e-6)
    # The curvature term matters: Grad-CAM (the same without it) gives other maps.
    grad = camlens.GradCAM(net, "trunk", relu=False, normalize="none")(x, target=units)
    assert np.abs(grad.raw - exp.raw).max() > 1e-2 * scale


def test_shapleycam_of_a_function_target_matches_the_reference() -> None:
    # ReST (the paper's score): y_c + log softmax_c(y) = 2 y_c - logsumexp(y), of the logits.
    net = SmoothNet().double().eval()
    x = torch.randn(3, 3, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    class Logits(nn.Module):
        def __init__(self, inner: SmoothNet) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner.head(self.inner.trunk(x))

    model = Logits(net).eval()
    rest = camlens.Score(
        lambda out: 2 * out[:, 1] - torch.logsumexp(out, dim=-1), "ReST of class 1"
    )
    exp = camlens.ShapleyCAM(model, "inner.trunk", relu=False, normalize="none")(x, target=rest)
    with torch.no_grad():
        acts = net.trunk(x)

    def score(a: torch.Tensor, unit: int) -> torch.Tensor:
        y = net.head(a)[0]
        return 2 * y[unit] - torch.logsumexp(y, dim=-1)

    expected, _, _ = _reference(score, acts, [[1]] * 3)
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


class Quadratic(nn.Module):
    """``y_c = sum_k u_ck S_k + 1/2 sum_k v_ck S_k^2`` of the input's channel sums ``S_k``."""

    def __init__(self, u: torch.Tensor, v: torch.Tensor) -> None:
        super().__init__()
        self.feat = nn.Identity()
        self.u = nn.Parameter(u, requires_grad=False)
        self.v = nn.Parameter(v, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.feat(x).sum(dim=(2, 3))  # (N, K)
        return s @ self.u + 0.5 * (s**2) @ self.v


def test_shapleycam_of_a_quadratic_head_is_known_in_closed_form() -> None:
    # g_kij = u_ck + v_ck S_k and (H A)_kij = sum_k'i'j' v_ck d_kk' A_k'i'j' = v_ck S_k, so
    # w_k = u_ck + v_ck S_k / 2 (Grad-CAM's weight is u_ck + v_ck S_k).
    u = torch.tensor([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.25]], dtype=torch.float64)  # (K, C)
    v = torch.tensor([[0.5, 1.0], [-1.5, 0.5], [2.0, -1.0]], dtype=torch.float64)
    net = Quadratic(u, v)
    x = torch.tensor(
        np.random.default_rng(7).uniform(-1, 1, size=(2, 3, 3, 4)), dtype=torch.float64
    )
    s = x.sum(dim=(2, 3)).numpy()  # (N, K)
    for c in range(2):
        exp = camlens.ShapleyCAM(net, "feat", relu=False, normalize="none", layout="nchw")(
            x, target=c
        )
        w = u[:, c].numpy() + 0.5 * v[:, c].numpy() * s  # (N, K)
        expected = np.einsum("nk,nkij->nij", w, x.numpy())
        np.testing.assert_allclose(exp.raw, expected, rtol=1e-6, atol=1e-9)
        grad = camlens.GradCAM(net, "feat", relu=False, normalize="none", layout="nchw")(
            x, target=c
        )
        w_grad = u[:, c].numpy() + v[:, c].numpy() * s
        np.testing.assert_allclose(
            grad.raw, np.einsum("nk,nkij->nij", w_grad, x.numpy()), rtol=1e-6, atol=1e-9
        )


def test_shapleycam_is_gradcam_where_the_score_is_piecewise_linear_in_the_layer() -> None:
    # conv -> BN -> ReLU -> conv -> ReLU, then GAP + linear: H A = 0 at the first ReLU.
    net = TrunkHead().eval()
    x = torch.randn(3, 3, 12, 12)
    for layer in ("trunk.2", "trunk"):
        shapley = camlens.explain(
            net, x, method="shapleycam", layer=layer, target=[[1, 4]] * 3, relu=False
        )
        grad = camlens.explain(
            net, x, method="gradcam", layer=layer, target=[[1, 4]] * 3, relu=False
        )
        np.testing.assert_array_equal(shapley.raw, grad.raw)


def test_batch_and_targets_rows_equal_single_calls() -> None:
    net = SmoothNet().eval()
    x = torch.randn(3, 3, 6, 7)
    explainer = camlens.ShapleyCAM(net, "trunk", relu=False)
    batch = explainer(x, target=camlens.TopK(2))
    for n in range(3):
        for j in range(2):
            unit = int(batch.units[2 * n + j])
            single = explainer(x[n : n + 1], target=unit)
            np.testing.assert_allclose(batch.raw[2 * n + j], single.raw[0], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(batch.maps[2 * n + j], single.maps[0], atol=1e-6)


def test_shapleycam_at_two_layers_is_the_mean_of_each_layers_map() -> None:
    net = SmoothNet().double().eval()
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    both = camlens.explain(net, x, method="shapleycam", layer=["trunk.0", "trunk"], target=1)
    each = [camlens.explain(net, x, method="shapleycam", layer=n, target=1) for n in both.layers]
    # Nested layers (the softplus reads the conv): each layer's H A is its own.
    scaled = [e.raw / np.abs(e.raw).max(axis=(1, 2), keepdims=True) for e in each]
    np.testing.assert_allclose(both.raw, (scaled[0] + scaled[1]) / 2, rtol=1e-5, atol=1e-6)


def test_eigen_smooth_projects_shapleycams_terms() -> None:
    net = SmoothNet().double().eval()
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    exp = camlens.explain(
        net, x, method="shapleycam", layer="trunk", target=0, eigen_smooth=True, relu=False
    )
    with torch.no_grad():
        acts = net.trunk(x)

    def probability(a: torch.Tensor, unit: int) -> torch.Tensor:
        return torch.softmax(net.head(a), dim=-1)[0, unit]

    _, _, terms = _reference(probability, acts, [[0], [0]])
    expected = camlens.methods.smoothing.eigen_smooth(terms)
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_the_method_alone_refuses_to_weigh_without_hessian_products() -> None:
    method = camlens.methods.get_method("shapleycam")
    a = np.ones((1, 2, 3, 3))
    with pytest.raises(camlens.MethodError, match="Hessian-vector products"):
        method.cam(a, a)
    with pytest.raises(camlens.MethodError, match="Hessian-vector products"):
        camlens.explain(TrunkHead(), torch.randn(1, 3, 8, 8), method="finercam", base="shapleycam")


def test_shapleycam_is_listed_and_exported() -> None:
    assert camlens.methods.REGISTRY["shapleycam"] is camlens.methods.ShapleyCAM
    assert camlens.ShapleyCAM.method_type is camlens.methods.ShapleyCAM
    assert "ShapleyCAM" in camlens.__all__


def test_a_backend_without_hessian_products_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from camlens.backends.torch import TorchBackend

    monkeypatch.setattr(TorchBackend, "hessians", False)
    with pytest.raises(camlens.MethodError, match="needs Hessian-vector products"):
        camlens.ShapleyCAM(TrunkHead())
    camlens.GradCAM(TrunkHead())  # first-order methods still run


def test_the_probe_gives_hessian_products_only_with_the_models_own_gradients() -> None:
    from camlens.backends.torch import TorchBackend

    backend = TorchBackend(TrunkHead().eval())
    x = backend.prepare(torch.randn(1, 3, 8, 8))
    layer = [backend.resolve_layer("trunk")]
    for options in ({"gradients": False}, {"gradients": True, "guided": True}):
        with pytest.raises(camlens.MethodError, match="come with the model's own gradients"):
            backend.probe(x, layer, camlens.Class(0), hessian=True, **options)  # type: ignore[arg-type]
    plain = backend.probe(x, layer, camlens.Class(0), gradients=True)
    assert plain.hessian_products is None
