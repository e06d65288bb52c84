"""Ablation-CAM's tail-only path gives the same maps as full forward passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import camlens
import camlens.backends.torch as torch_backend
from camlens import zoo
from camlens.backends.torch._tail import Tail
from nets import MiniResNet


def _full_forwards(model: torch.nn.Module, name: str) -> Tail:
    return Tail(model, model.get_submodule(name), None, "forced by the test")


# The test compares raw maps: whether a random network's 2x2 map is near-flat is beside the point.
@pytest.mark.filterwarnings("ignore::camlens.errors.MapStrengthWarning")
@pytest.mark.parametrize(
    ("net", "layer", "size"),
    [
        (MiniResNet, "layer2", 16),
        (MiniResNet, "layer2.0", 16),
        (lambda: zoo.mobilenet_v2(pretrained=False), "features.16", 64),
        (lambda: zoo.mobilenet_v2(pretrained=False), "features", 64),
    ],
)
def test_tail_only_equals_full_forwards(monkeypatch, net, layer: str, size: int) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = net().eval()
    x = torch.randn(2, 3, size, size)
    cam = camlens.AblationCAM(model, layer, relu=False)
    tail_only = cam(x, target=camlens.TopK(2))
    assert cam._backend._tails[cam.layers[0]].exact_tail_only
    monkeypatch.setattr(torch_backend, "make_tail", _full_forwards)
    full = camlens.AblationCAM(model, layer, relu=False)(x, target=camlens.TopK(2))
    scale = np.abs(full.raw).max()
    np.testing.assert_allclose(tail_only.raw, full.raw, rtol=1e-5, atol=1e-5 * scale)
