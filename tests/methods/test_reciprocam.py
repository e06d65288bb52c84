"""Recipro-CAM against a reference written from the paper: the head run once per location."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import camlens
from camlens.backends.torch._tail import make_tail
from nets import MiniResNet, NonLinearHead, TrunkHead

#: Recipro-CAM's raw maps are class probabilities per masked location: on these tiny random
#: networks they are near-flat by nature (and min-max shows them stretched, which camlens
#: warns about). These tests check the maths; map strength is tested in test_strength.py.
pytestmark = pytest.mark.filterwarnings("ignore::camlens.MapStrengthWarning")

GAUSSIAN = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16.0  # the official code's kernel


def _masked(a: np.ndarray, i: int, j: int, gaussian: bool) -> np.ndarray:
    """The layer's (K, h, w) output kept at (i, j) only, or spread around it by the Gaussian."""
    out = np.zeros_like(a)
    if not gaussian:
        out[:, i, j] = a[:, i, j]
        return out
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if 0 <= i + di < a.shape[1] and 0 <= j + dj < a.shape[2]:
                out[:, i + di, j + dj] = a[:, i, j] * GAUSSIAN[di + 1, dj + 1]
    return out


def ref_reciprocam(
    net: torch.nn.Module, x: torch.Tensor, units: list[int], gaussian: bool, probability: bool
) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        acts = net.trunk(x).double().numpy()
        maps = np.zeros((len(x), *acts.shape[2:]))
        for n, c in enumerate(units):
            for i in range(acts.shape[2]):
                for j in range(acts.shape[3]):
                    m = torch.from_numpy(_masked(acts[n], i, j, gaussian))[None]
                    y = net.double().head(m)[0]
                    net.float()
                    maps[n, i, j] = torch.softmax(y, 0)[c] if probability else y[c]
    return maps


@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("net_cls", [TrunkHead, NonLinearHead])
def test_reciprocam_matches_the_paper(net_cls: type, gaussian: bool) -> None:
    net = net_cls()
    x = torch.randn(2, 3, 16, 16)
    units = [1, 2]
    exp = camlens.explain(
        net, x, method="reciprocam", layer="trunk", target=units, gaussian=gaussian
    )
    expected = ref_reciprocam(net, x, units, gaussian, probability=True)
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-5, atol=1e-7)


def test_reciprocam_on_a_gap_linear_head_is_a_softmax_of_the_cam_terms() -> None:
    # GAP + linear: the head sees A_ij / (h w), so L_ij = softmax_c(W A_ij / (h w) + b).
    net = TrunkHead(classes=4)
    x = torch.randn(1, 3, 12, 12)
    with torch.no_grad():
        a = net.eval().trunk(x)[0].double().numpy()
    h, w = a.shape[1:]
    logits = np.einsum("ck,kij->ijc", net.fc.weight.detach().double().numpy(), a) / (h * w)
    logits += net.fc.bias.detach().double().numpy()
    p = np.exp(logits - logits.max(axis=2, keepdims=True))
    p /= p.sum(axis=2, keepdims=True)
    exp = camlens.explain(net, x, method="reciprocam", layer="trunk", target=3)
    np.testing.assert_allclose(exp.raw[0], p[:, :, 3], rtol=1e-5)


def test_reciprocam_raw_scores_for_an_output_target() -> None:
    net = NonLinearHead()
    x = torch.randn(2, 3, 16, 16)
    exp = camlens.explain(net, x, method="reciprocam", layer="trunk", target=camlens.Output(0))
    expected = ref_reciprocam(net, x, [0, 0], gaussian=False, probability=False)
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-5, atol=1e-7)


def test_reciprocam_runs_only_the_tail_and_does_not_depend_on_batch_size() -> None:
    net = MiniResNet().eval()
    assert make_tail(net, "layer2").exact_tail_only
    x = torch.randn(2, 3, 16, 16)
    calls: list[int] = []
    net.stem.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    small = camlens.explain(net, x, method="reciprocam", layer="layer2", target=1, batch_size=5)
    probe_calls = len(calls)
    big = camlens.explain(net, x, method="reciprocam", layer="layer2", target=1, batch_size=64)
    np.testing.assert_allclose(small.raw, big.raw, rtol=1e-5, atol=1e-7)
    assert probe_calls == 1  # the trunk ran once (the probe); the 2 x 64 locations, tail only


def test_reciprocam_reports_progress_per_location() -> None:
    seen: list[tuple[int, int]] = []
    camlens.explain(
        TrunkHead(),
        torch.randn(2, 3, 8, 8),
        method="reciprocam",
        layer="trunk",
        batch_size=7,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen[-1] == (32, 32)  # 2 images x 4 x 4 locations
