"""Each method against an independent reference written here from its paper's formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import camlens
from nets import NonLinearHead, TrunkHead


def _acts_grads(net: torch.nn.Module, x: torch.Tensor, cls: int) -> tuple[np.ndarray, np.ndarray]:
    """Run trunk and head by hand; return A and dy_c/dA in float64 NumPy."""
    net.eval()
    with torch.no_grad():
        a = net.trunk(x)
    a = a.detach().double().requires_grad_(True)
    y = net.double().head(a)[:, cls].sum()
    (g,) = torch.autograd.grad(y, a)
    net.float()
    return a.detach().numpy(), g.numpy()


def ref_gradcam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    alpha = g.mean(axis=(2, 3))
    return np.einsum("nk,nkij->nij", alpha, a)


def ref_gradcampp(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    out = np.zeros(a.shape[:1] + a.shape[2:])
    for n in range(a.shape[0]):
        for k in range(a.shape[1]):
            s = a[n, k].sum()
            num = g[n, k] ** 2
            den = 2 * g[n, k] ** 2 + s * g[n, k] ** 3
            coef = np.divide(num, den, out=np.zeros_like(num), where=den != 0)
            w = (coef * np.maximum(g[n, k], 0)).sum()
            out[n] += w * a[n, k]
    return out


def ref_xgradcam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    out = np.zeros(a.shape[:1] + a.shape[2:])
    for n in range(a.shape[0]):
        for k in range(a.shape[1]):
            s = a[n, k].sum()
            w = (a[n, k] * g[n, k]).sum() / s if s != 0 else 0.0
            out[n] += w * a[n, k]
    return out


def ref_hirescam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    return (a * g).sum(axis=1)


def ref_elementwise(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.maximum(a * g, 0).sum(axis=1)


def ref_layercam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    return (np.maximum(g, 0) * a).sum(axis=1)


def _first_pc_projection(f: np.ndarray) -> np.ndarray:
    out = []
    for item in f:
        k, h, w = item.shape
        mat = item.reshape(k, h * w).T  # (hw, K)
        # First principal direction = top eigenvector of F^T F.
        _, vecs = np.linalg.eigh(mat.T @ mat)
        proj = mat @ vecs[:, -1]
        out.append((proj if proj.sum() >= 0 else -proj).reshape(h, w))
    return np.stack(out)


def ref_eigencam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    return _first_pc_projection(a)


def ref_eigengradcam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    return _first_pc_projection(a * g)


def ref_fem(a: np.ndarray, g: np.ndarray, k: float = 2.0) -> np.ndarray:
    out = np.zeros(a.shape[:1] + a.shape[2:])
    for n in range(a.shape[0]):
        for c in range(a.shape[1]):
            mu, sigma = a[n, c].mean(), a[n, c].std()
            out[n] += mu * (a[n, c] >= mu + k * sigma)
    return out


def ref_kpcacam(
    a: np.ndarray,
    g: np.ndarray,
    kernel: str = "sigmoid",
    gamma: float | None = None,
    coef0: float = 1.0,
    degree: int = 3,
) -> np.ndarray:
    """Kernel PCA written point by point: K_ij = k(x_i, x_j), H K H, top singular pair."""
    functions = {
        "sigmoid": lambda x, y, gm: np.tanh(gm * x @ y + coef0),
        "rbf": lambda x, y, gm: np.exp(-gm * ((x - y) ** 2).sum()),
        "poly": lambda x, y, gm: (gm * x @ y + coef0) ** degree,
        "linear": lambda x, y, gm: x @ y,
        "cosine": lambda x, y, gm: (
            x @ y / (np.linalg.norm(x) * np.linalg.norm(y))
            if np.linalg.norm(x) * np.linalg.norm(y)
            else 0.0
        ),
    }
    out = []
    for item in a:
        k, h, w = item.shape
        pts = item.reshape(k, h * w).T
        pts = pts - pts.mean(axis=0)
        gm = 1.0 / k if gamma is None else gamma
        n = h * w
        mat = np.array(
            [[functions[kernel](pts[i], pts[j], gm) for j in range(n)] for i in range(n)]
        )
        centre = np.eye(n) - np.full((n, n), 1.0 / n)
        u, sv, _ = np.linalg.svd(centre @ mat @ centre)  # symmetric PSD: SVD = eigen
        proj = u[:, 0] * np.sqrt(sv[0])
        if proj @ item.sum(axis=0).reshape(-1) < 0:
            proj = -proj
        out.append(proj.reshape(h, w))
    return np.stack(out)


REFERENCES = {
    "kpcacam": ref_kpcacam,
    "fem": ref_fem,
    "gradcam": ref_gradcam,
    "gradcam++": ref_gradcampp,
    "xgradcam": ref_xgradcam,
    "hirescam": ref_hirescam,
    "gradcam-elementwise": ref_elementwise,
    "layercam": ref_layercam,
    "eigencam": ref_eigencam,
    "eigengradcam": ref_eigengradcam,
}


def _upsample_normalise(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    up = torch.nn.functional.interpolate(
        torch.from_numpy(np.maximum(raw, 0))[:, None],
        size=size,
        mode="bilinear",
        align_corners=False,
    )[:, 0].numpy()
    lo = up.min(axis=(1, 2), keepdims=True)
    hi = up.max(axis=(1, 2), keepdims=True)
    return (up - lo) / (hi - lo)


#: Methods whose reference reads the model itself, tested below on their own.
MODEL_REFERENCES = {
    "cam",
    "finercam",
    "refinecam",
    "smoothgradcam++",
    "opticam",  # test_opticam.py
    "legrad",  # test_attention_methods.py: read attention maps
    "attentionrollout",
    "shapleycam",  # test_shapleycam.py (second derivatives)
    "fullgrad",  # test_fullgrad.py (every layer's bias-gradient)
    # test_pixel_methods.py:
    "saliency",
    "smoothgrad",
    "guidedbackprop",
    "guidedgradcam",
}  # see their files


def test_every_registered_method_has_a_reference() -> None:
    # Perturbation methods have theirs in test_perturbation.py.
    names = {
        cls.name
        for cls in camlens.methods.REGISTRY.values()
        if not issubclass(cls, camlens.methods.PerturbationMethod)
    }
    assert names == set(REFERENCES) | MODEL_REFERENCES


#: Float32 tolerance (relative to the map's largest value) where 1e-5 is out of reach: the
#: centred sigmoid kernel is a near-constant matrix minus its means, which loses about four
#: digits in float32 (KPCA-CAM matches to 1e-6 in float64: test_kpcacam_kernels_...).
FLOAT32_TOLERANCE = {"kpcacam": 1e-4}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("net_cls", [TrunkHead, NonLinearHead])
def test_method_matches_paper_reference(name: str, net_cls: type) -> None:
    net = net_cls()
    x = torch.randn(3, 3, 16, 12)
    cls = 2
    a, g = _acts_grads(net, x, cls)
    expected_raw = REFERENCES[name](a, g)
    exp = camlens.explain(net, x, method=name, layer="trunk", target=cls)
    scale = np.abs(expected_raw).max()
    tol = FLOAT32_TOLERANCE.get(name, 1e-5)
    np.testing.assert_allclose(exp.raw, expected_raw, atol=tol * scale, rtol=1e-4)
    assert np.all(np.maximum(expected_raw, 0).reshape(3, -1).max(1) > 0)
    np.testing.assert_allclose(exp.maps, _upsample_normalise(expected_raw, (16, 12)), atol=2 * tol)


def test_gradcampp_differs_from_an_eps_guarded_variant() -> None:
    # A fixed eps in the denominator (as some peers add) changes the result markedly when
    # squared gradients are small; the closed form must not.
    net = TrunkHead()
    x = torch.randn(2, 3, 16, 16)
    a, g = _acts_grads(net, x, 0)
    a, g = a, g * 1e-3
    exact = ref_gradcampp(a, g)
    got = camlens.methods.GradCAMPlusPlus().cam(a, g)
    np.testing.assert_allclose(got, exact, rtol=1e-9, atol=0)


def test_gradcam_equals_cam_for_gap_linear_head() -> None:
    # For GAP + linear, dy_c/dA^k_ij = w_ck / (h w): Grad-CAM is CAM divided by h*w.
    net = TrunkHead(classes=4)
    x = torch.randn(2, 3, 20, 20)
    with torch.no_grad():
        a = net.eval().trunk(x).numpy()
    w = net.fc.weight.detach().numpy()
    exp = camlens.explain(net, x, layer="trunk", target=[2, 3])
    for n, c in enumerate([2, 3]):
        cam = np.einsum("k,kij->ij", w[c], a[n])
        h, wd = a.shape[2:]
        np.testing.assert_allclose(exp.raw[n] * h * wd, cam, rtol=1e-5, atol=1e-6)


def test_exact_values_on_hand_weighted_cnn() -> None:
    # Conv 1x1 with weights (+1, -1), ReLU, GAP, linear (2, 3):
    #   y = 2 mean(relu(x)) + 3 mean(relu(-x));  dy/dA_k = w_k / 4 on a 2x2 map.
    conv = torch.nn.Conv2d(1, 2, 1, bias=False)
    fc = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
        fc.weight.copy_(torch.tensor([[2.0, 3.0]]))
    net = torch.nn.Sequential(
        conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), fc
    )
    x = torch.tensor([[[[1.0, -2.0], [0.0, 4.0]]]])
    exp = camlens.explain(net, x, layer="1", target=camlens.Output(0))
    # A_0 = relu(x) = [[1,0],[0,4]], A_1 = relu(-x) = [[0,2],[0,0]]
    # raw = (2 A_0 + 3 A_1) / 4 = [[0.5, 1.5], [0, 2]]
    np.testing.assert_allclose(exp.raw[0], [[0.5, 1.5], [0.0, 2.0]], atol=1e-7)
    np.testing.assert_allclose(exp.maps[0], [[0.25, 0.75], [0.0, 1.0]], atol=1e-7)
    assert exp.scores[0] == pytest.approx(2 * 5 / 4 + 3 * 2 / 4)
    # Grad-CAM++ on the same net: per channel, a = g^2 / (2 g^2 + S g^3) with g = w/4.
    pp = camlens.explain(net, x, method="gradcam++", layer="1", target=camlens.Output(0))
    g0, g1, s0, s1 = 0.5, 0.75, 5.0, 2.0
    w0 = 4 * (g0**2 / (2 * g0**2 + s0 * g0**3)) * g0
    w1 = 4 * (g1**2 / (2 * g1**2 + s1 * g1**3)) * g1
    expected = w0 * np.array([[1, 0], [0, 4]]) + w1 * np.array([[0, 2], [0, 0]])
    np.testing.assert_allclose(pp.raw[0], expected, rtol=1e-6)


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_gradcam_plusplus_zero_denominator_gives_a_zero_coefficient(library: str) -> None:
    # Channel 0 sums to S = -4. At g = 0.5 the denominator 2 g^2 + S g^3 = 0.5 - 0.5 is exactly
    # 0 (coefficient 0); at g = 0.25 it is 0.125 - 0.0625, so a = 0.0625 / 0.0625 = 1 and the
    # pixel adds 1 * 0.25; g = 0 and g = -1 add nothing. Channel 1 (S = 2, g = 1 everywhere):
    # a = 1 / (2 + 2) at each of 4 pixels, w = 4 * 0.25 * 1 = 1.
    acts = np.array([[[[-1.0, -1.0], [-1.0, -1.0]], [[0.5, 0.5], [0.5, 0.5]]]])
    grads = np.array([[[[0.5, 0.25], [0.0, -1.0]], [[1.0, 1.0], [1.0, 1.0]]]])
    if library == "torch":
        acts, grads = torch.from_numpy(acts), torch.from_numpy(grads)
    weights = camlens.methods.GradCAMPlusPlus().weights(acts, grads)
    np.testing.assert_allclose(np.asarray(weights), [[0.25, 1.0]], rtol=1e-12)


def test_user_method_object_works_without_registering() -> None:
    class MaxGrad(camlens.methods.Method):
        name = "maxgrad"

        def weights(self, activations, gradients):  # type: ignore[no-untyped-def]
            return gradients.amax(dim=(2, 3))

    net = TrunkHead()
    x = torch.randn(2, 3, 16, 16)
    exp = camlens.explain(net, x, method=MaxGrad(), layer="trunk")
    a, g = _acts_grads(net, x[:1], int(exp.units[0]))
    expected = np.einsum("nk,nkij->nij", g.max(axis=(2, 3)), a)
    np.testing.assert_allclose(exp.raw[:1], expected, rtol=1e-4, atol=1e-6)
    assert exp.method == "maxgrad"
    assert "maxgrad" not in camlens.methods.REGISTRY


def test_unknown_method_name_lists_the_registry() -> None:
    with pytest.raises(camlens.CamlensError, match="gradcam\\+\\+"):
        camlens.explain(TrunkHead(), torch.randn(1, 3, 8, 8), method="gradcamm")


def test_unknown_method_option_is_a_clear_error() -> None:
    with pytest.raises(camlens.CamlensError, match="GradCAM does not take the option"):
        camlens.GradCAM(TrunkHead(), "trunk", batch_size=4)


def test_cam_weights_are_the_linear_layers_row_of_the_class() -> None:
    # CAM (Zhou et al. 2016): L_c = sum_k w_ck A_k with w_c the linear layer's row of class c.
    net = TrunkHead(classes=4)
    x = torch.randn(3, 3, 16, 12)
    with torch.no_grad():
        a = net.eval().trunk(x).double().numpy()
    w = net.fc.weight.detach().double().numpy()
    classes = [2, 0, 3]
    exp = camlens.explain(net, x, method="cam", layer="trunk", target=classes)
    expected = np.stack([np.einsum("k,kij->ij", w[c], a[n]) for n, c in enumerate(classes)])
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(exp.maps, _upsample_normalise(expected, (16, 12)), atol=2e-5)


def test_cam_is_gradcam_times_the_layer_area_on_a_gap_linear_head() -> None:
    # On GAP + linear, Grad-CAM's alpha_k = w_ck / (h w): CAM = (h w) Grad-CAM, same maps.
    net = TrunkHead(classes=6)
    x = torch.randn(2, 3, 14, 18)
    cam = camlens.explain(net, x, method="cam", layer="trunk", target=camlens.TopK(2))
    grad = camlens.explain(net, x, method="gradcam", layer="trunk", target=camlens.TopK(2))
    h, w = cam.raw.shape[1:]
    np.testing.assert_allclose(cam.raw, grad.raw * h * w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cam.maps, grad.maps, atol=1e-6)


def test_cam_on_a_hand_weighted_cnn() -> None:
    # The net of test_exact_values_on_hand_weighted_cnn: conv (+1, -1), ReLU, GAP, linear (2, 3).
    conv = torch.nn.Conv2d(1, 2, 1, bias=False)
    fc = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
        fc.weight.copy_(torch.tensor([[2.0, 3.0]]))
    net = torch.nn.Sequential(
        conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), fc
    )
    x = torch.tensor([[[[1.0, -2.0], [0.0, 4.0]]]])
    exp = camlens.explain(net, x, method="cam", layer="1", target=camlens.Output(0))
    # 2 relu(x) + 3 relu(-x) = 2 [[1, 0], [0, 4]] + 3 [[0, 2], [0, 0]]
    np.testing.assert_allclose(exp.raw[0], [[2.0, 6.0], [0.0, 8.0]], atol=1e-6)


@pytest.mark.parametrize(
    ("net", "layer"),
    [(NonLinearHead(), "trunk"), (TrunkHead(), "trunk.3")],
    ids=["conv-head", "before-the-relu"],
)
def test_cam_refuses_a_layer_not_read_by_a_global_pool(net: torch.nn.Module, layer: str) -> None:
    with pytest.raises(camlens.MethodError, match="global average pool"):
        camlens.explain(net, torch.randn(2, 3, 16, 16), method="cam", layer=layer)


def test_fem_on_a_hand_made_channel() -> None:
    # One channel [[0, 0], [0, 4]]: mu = 1, sigma = sqrt(3); with k = 1 the threshold is
    # 2.73, only the 4 passes: L = mu * [[0, 0], [0, 1]]. A second channel that is constant 2
    # is all at its threshold (sigma = 0): it adds its mean, 2, everywhere.
    acts = np.array([[[[0.0, 0.0], [0.0, 4.0]], [[2.0, 2.0], [2.0, 2.0]]]])
    got = camlens.methods.FEM(k=1).cam(acts, None)
    np.testing.assert_allclose(got, [[[2.0, 2.0], [2.0, 3.0]]])
    # k = 0: everything at or above the mean, so the 4 only (mean 1) plus the constant 2.
    np.testing.assert_allclose(camlens.methods.FEM(k=0).cam(acts, None), got)
    # k = -1: the threshold 1 - 1.73 < 0 takes every location of the first channel.
    everywhere = camlens.methods.FEM(k=-1).cam(acts, None)
    np.testing.assert_allclose(everywhere, [[[3.0, 3.0], [3.0, 3.0]]])


@pytest.mark.parametrize("k", [float("nan"), "2", True])
def test_fem_refuses_a_bad_k(k: object) -> None:
    with pytest.raises(camlens.BadInputError, match="k must be a finite number"):
        camlens.methods.FEM(k=k)  # type: ignore[arg-type]


@pytest.mark.parametrize("kernel", ["sigmoid", "rbf", "poly", "linear", "cosine"])
def test_kpcacam_kernels_match_the_reference(kernel: str) -> None:
    net = TrunkHead()
    a, g = _acts_grads(net, torch.randn(2, 3, 12, 10), 0)
    gamma = None if kernel == "sigmoid" else 0.3
    got = camlens.methods.KPCACAM(kernel=kernel, gamma=gamma, coef0=0.5, degree=2).cam(a, g)
    expected = ref_kpcacam(a, g, kernel=kernel, gamma=gamma, coef0=0.5, degree=2)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())


def test_kpcacam_with_a_linear_kernel_is_centred_pca() -> None:
    # Linear-kernel PCA of centred points is PCA: the scores X v_1 of the top direction.
    net = TrunkHead()
    a, g = _acts_grads(net, torch.randn(2, 3, 12, 10), 0)
    got = camlens.methods.KPCACAM(kernel="linear").cam(a, g)
    for n, item in enumerate(a):
        pts = item.reshape(item.shape[0], -1).T
        pts = pts - pts.mean(axis=0)
        scores = pts @ np.linalg.svd(pts)[2][0]
        scores = scores if scores @ item.sum(axis=0).reshape(-1) >= 0 else -scores
        np.testing.assert_allclose(got[n].reshape(-1), scores, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kernel": "laplacian"}, "kernel must be one of"),
        ({"gamma": 0}, "gamma must be a positive number"),
        ({"coef0": float("inf")}, "coef0 must be a finite number"),
        ({"degree": 0}, "degree must be a positive int"),
    ],
)
def test_kpcacam_refuses_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(camlens.BadInputError, match=message):
        camlens.methods.KPCACAM(**options)  # type: ignore[arg-type]
