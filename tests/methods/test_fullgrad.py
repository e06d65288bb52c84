"""FullGrad against the paper's formula, written here with explicit bias tensors and autograd.

The reference never hooks a module: it runs the network functionally with each layer's bias
(a batch norm's effective bias computed by hand) added as its own full-size tensor, so the
autograd gradient with respect to that tensor is the per-position gradient at the layer's
output. Completeness (Srinivas & Fleuret, 2019, Proposition 2: for a network of ReLUs,
max-pools and affine layers with biases, ``f(x) = dF/dx · x + sum_l dF/db_l · b_l``) is checked
on the backend's own decomposition.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camlens
from camlens.backends.base import INPUT
from camlens.backends.torch import TorchBackend

EPS = 1e-6  # the official code's post-processing epsilon


def _bn_net(seed: int = 3) -> nn.Sequential:
    """conv + BN (eval, non-trivial running stats) + ReLU + max-pool + conv + ReLU + linear."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * 4 * 4, 3),
    )
    bn = net[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.3, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return net.eval()


def _plain_net() -> nn.Sequential:
    """The same without BN, with an average pool: a piecewise-linear ReLU network."""
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


def _psi(t: torch.Tensor) -> torch.Tensor:
    """abs, then min-max per image over (C, h, w) (the official ``_postProcess``)."""
    a = t.abs()
    a = a - a.amin(dim=(1, 2, 3), keepdim=True)
    return a / (a.amax(dim=(1, 2, 3), keepdim=True) + EPS)


def reference(net: nn.Sequential, x: torch.Tensor, unit: int) -> tuple[np.ndarray, float]:
    """FullGrad of ``_bn_net`` by the formula, in float64; also the forward's largest gap."""
    conv1, bn, _, _, conv2, _, _, fc = [m.double() for m in net]
    x = x.double().requires_grad_(True)
    n = x.shape[0]
    b1 = conv1.bias.detach()
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    b_bn = bn.bias.detach() - bn.running_mean * scale  # the effective bias, by hand
    b2, b_fc = conv2.bias.detach(), fc.bias.detach()
    B1 = b1.view(1, -1, 1, 1).expand(n, -1, 8, 8).clone().requires_grad_(True)
    B_bn = b_bn.view(1, -1, 1, 1).expand(n, -1, 8, 8).clone().requires_grad_(True)
    B2 = b2.view(1, -1, 1, 1).expand(n, -1, 4, 4).clone().requires_grad_(True)
    B_fc = b_fc.view(1, -1).expand(n, -1).clone().requires_grad_(True)
    z1 = F.conv2d(x, conv1.weight.detach(), padding=1) + B1
    y1 = z1 * scale.view(1, -1, 1, 1) + B_bn
    p1 = F.max_pool2d(F.relu(y1), 2)
    z2 = F.conv2d(p1, conv2.weight.detach(), padding=1) + B2
    out = F.relu(z2).flatten(1) @ fc.weight.detach().T + B_fc
    with torch.no_grad():
        gap = float((out - net(x)).abs().max())
    gx, g1, g_bn, g2 = torch.autograd.grad(out[:, unit].sum(), [x, B1, B_bn, B2])
    saliency = _psi(gx * x).sum(1)
    for g, b in ((g1, b1), (g_bn, b_bn), (g2, b2)):
        term = _psi(g * b.view(1, -1, 1, 1)).sum(1, keepdim=True)
        saliency = saliency + F.interpolate(term, size=(8, 8), mode="bilinear")[:, 0]
    net.float()
    return saliency.detach().numpy(), gap


def test_map_equals_the_formula_with_explicit_biases() -> None:
    net = _bn_net()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    expected, gap = reference(net, x, unit=2)
    assert gap < 1e-6  # the reference runs the same function
    exp = camlens.FullGrad(net)(x, target=2)
    assert exp.layers == ("input",) and exp.method == "fullgrad"
    np.testing.assert_allclose(exp.raw, expected, rtol=0, atol=1e-5)
    lo = expected.min(axis=(1, 2), keepdims=True)
    hi = expected.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(exp.maps, (expected - lo) / (hi - lo), atol=1e-5)


def test_the_decomposition_names_every_feature_map_layer_with_a_bias() -> None:
    net = _bn_net()
    backend = TorchBackend(net)
    x = backend.prepare(torch.randn(2, 3, 8, 8))
    probe = backend.probe(x, [INPUT], camlens.Class(0), gradients=True, biases=True)
    assert probe.biases is not None
    assert probe.biases.layers == ("0", "1", "4")  # conv, BN, conv; the linear layer is rest
    assert [tuple(m.shape) for m in probe.biases.maps] == [(2, 4, 8, 8), (2, 4, 8, 8), (2, 5, 4, 4)]
    # The linear layer's bias-gradient: d out_0 / d b_fc = one-hot, so the term is b_fc[0].
    np.testing.assert_allclose(probe.biases.rest, [net[7].bias[0].item()] * 2, rtol=1e-6)


def _decomposition(
    backend: TorchBackend, x: torch.Tensor, target: object
) -> tuple[np.ndarray, np.ndarray]:
    """Return the summed terms of the decomposition per row, and the rows' scores."""
    resolved = camlens.targets.as_target(target)  # type: ignore[arg-type]
    probe = backend.probe(x, [INPUT], resolved, gradients=True, biases=True)
    assert probe.biases is not None and probe.gradients is not None
    total = (probe.activations[0] * probe.gradients[0]).double().sum(dim=(1, 2, 3)).numpy()
    for m in probe.biases.maps:
        total = total + m.double().sum(dim=(1, 2, 3)).numpy()
    return total + probe.biases.rest, probe.resolved.values.reshape(-1)


@pytest.mark.parametrize("make", [_plain_net, _bn_net], ids=["relu-net", "with-batchnorm"])
def test_completeness_the_terms_sum_to_the_score(make: object) -> None:
    net = make()  # type: ignore[operator]
    backend = TorchBackend(net)
    x = backend.prepare(torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)))
    total, scores = _decomposition(backend, x, camlens.TopK(2))
    assert len(total) == 8 and np.abs(scores).min() > 1e-3
    np.testing.assert_allclose(total, scores, rtol=1e-5, atol=1e-6)


def test_completeness_fails_without_the_batchnorm_bias() -> None:
    """The effective bias matters: its term is far from zero on this net."""
    net = _bn_net()
    backend = TorchBackend(net)
    x = backend.prepare(torch.randn(2, 3, 8, 8))
    probe = backend.probe(x, [INPUT], camlens.Class(1), gradients=True, biases=True)
    assert probe.biases is not None
    bn_term = probe.biases.maps[1].double().sum(dim=(1, 2, 3)).numpy()
    assert np.abs(bn_term).min() > 1e-2 * np.abs(probe.resolved.values).max()


def test_a_shared_module_gives_one_term_per_call() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.conv(torch.relu(self.conv(x))))
            return self.fc(h.mean(dim=(2, 3)))

    backend = TorchBackend(Twice().eval())
    x = backend.prepare(torch.randn(2, 3, 6, 6))
    total, scores = _decomposition(backend, x, 1)
    np.testing.assert_allclose(total, scores, rtol=1e-5, atol=1e-6)


def test_a_batch_norm_without_running_stats_is_refused() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    net = nn.Sequential(*net, nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.randn(2, 3, 6, 6))
    with pytest.raises(camlens.MethodError, match="running statistics"):
        camlens.explain(net.eval(), torch.randn(2, 3, 6, 6), method="fullgrad")


def test_fullgrad_takes_no_layer_and_no_eigen_smooth() -> None:
    net = _bn_net()
    with pytest.raises(camlens.LayerError, match="input's pixels"):
        camlens.FullGrad(net, "4")
    with pytest.raises(camlens.MethodError, match="eigen_smooth"):
        camlens.FullGrad(net, eigen_smooth=True)
