"""Smooth Grad-CAM++ against the paper's formula on gradients of noisy copies of the input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import camlens
from nets import NonLinearHead, TrunkHead


def _noise(seed: int, sample: int, std: float, shape: tuple[int, ...]) -> np.ndarray:
    """The documented noise: one (C, H, W) draw per copy, seeded by (seed, copy)."""
    return np.random.default_rng([seed, sample]).normal(0.0, std, size=shape).astype(np.float32)


def ref_smoothgradcampp(
    net: torch.nn.Module, x: torch.Tensor, units: list[int], samples: int, std: float, seed: int
) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        a = net.trunk(x).double().numpy()
    grads = []
    for m in range(samples):
        noisy = x + torch.from_numpy(_noise(seed, m, std, tuple(x.shape[1:])))[None]
        with torch.no_grad():
            feats = net.trunk(noisy).double()
        feats.requires_grad_(True)
        y = net.double().head(feats)
        (g,) = torch.autograd.grad(y[torch.arange(len(x)), units].sum(), feats)
        net.float()
        grads.append(g.numpy())
    g = np.stack(grads)
    d1, d2, d3 = g.mean(0), (g**2).mean(0), (g**3).mean(0)
    out = np.zeros((len(x), *a.shape[2:]))
    for n in range(len(x)):
        for k in range(a.shape[1]):
            den = 2 * d2[n, k] + a[n, k].sum() * d3[n, k]
            alpha = np.divide(d2[n, k], den, out=np.zeros_like(den), where=den != 0)
            out[n] += (alpha * np.maximum(d1[n, k], 0)).sum() * a[n, k]
    return out


@pytest.mark.parametrize("net_cls", [TrunkHead, NonLinearHead])
def test_smoothgradcampp_matches_the_paper(net_cls: type) -> None:
    net = net_cls()
    x = torch.randn(2, 3, 16, 16)
    exp = camlens.explain(
        net, x, method="smoothgradcam++", layer="trunk", target=[1, 2], samples=3, std=0.2, seed=7
    )
    expected = ref_smoothgradcampp(net, x, [1, 2], samples=3, std=0.2, seed=7)
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    plain = camlens.explain(net, x, layer="trunk", target=[1, 2])
    np.testing.assert_allclose(exp.scores, plain.scores, rtol=1e-6)  # the input's own scores


def test_one_noiseless_copy_is_gradcampp() -> None:
    net = NonLinearHead()
    x = torch.randn(2, 3, 16, 16)
    pp = camlens.explain(net, x, method="gradcam++", layer="trunk", target=0)
    method = camlens.methods.SmoothGradCAMPlusPlus(samples=1, std=1e-30)
    smooth = camlens.explain(net, x, method=method, layer="trunk", target=0)
    np.testing.assert_allclose(smooth.raw, pp.raw, rtol=1e-5, atol=1e-7)


def test_topk_copies_explain_the_units_of_the_input() -> None:
    net = TrunkHead(classes=6)
    x = torch.randn(2, 3, 16, 16)
    cam = camlens.Explainer(net, "trunk", method="smoothgradcam++", std=2.0)
    top = cam(x, target=camlens.TopK(2))
    for j in range(2):
        single = cam(x, target=top.units.reshape(2, 2)[:, j].tolist())
        np.testing.assert_allclose(top.raw.reshape(2, 2, 8, 8)[:, j], single.raw, atol=1e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"samples": 0}, "samples"), ({"std": 0}, "std"), ({"seed": 1.5}, "seed")],
)
def test_smoothgradcampp_refuses_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(camlens.BadInputError, match=message):
        camlens.methods.SmoothGradCAMPlusPlus(**options)  # type: ignore[arg-type]
