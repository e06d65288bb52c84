"""RefineCAM: the product of the base method's normalised maps at several layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import camlens
from nets import MiniResNet


def _minmax(m: np.ndarray) -> np.ndarray:
    lo, hi = m.min(axis=(1, 2), keepdims=True), m.max(axis=(1, 2), keepdims=True)
    return (m - lo) / (hi - lo)


@pytest.mark.parametrize("base", ["gradcam++", "layercam"])
def test_refinecam_is_the_product_of_the_layers_maps(base: str) -> None:
    net = MiniResNet().eval()
    x = torch.randn(2, 3, 32, 32)
    layers = ["layer1", "layer2"]
    # Each layer's map, as the base method gives it alone (rectified, upsampled, min-max).
    per_layer = [
        camlens.explain(net, x, method=base, layer=name, target=[1, 3]).maps for name in layers
    ]
    got = camlens.explain(net, x, method="refinecam", base=base, layer=layers, target=[1, 3])
    np.testing.assert_allclose(got.maps, _minmax(per_layer[0] * per_layer[1]), atol=1e-5)
    mean = camlens.explain(net, x, method=base, layer=layers, target=[1, 3])
    assert not np.allclose(got.maps, mean.maps, atol=1e-2)  # not the mean of the layers


def test_refinecam_at_one_layer_is_its_base_method() -> None:
    net = MiniResNet().eval()
    x = torch.randn(2, 3, 32, 32)
    got = camlens.explain(net, x, method="refinecam", layer="layer2")
    base = camlens.explain(net, x, method="gradcam++", layer="layer2")
    np.testing.assert_allclose(got.raw, base.raw, rtol=1e-6)
    np.testing.assert_allclose(got.maps, base.maps, atol=1e-7)


def test_refinecam_refuses_a_perturbation_base() -> None:
    with pytest.raises(camlens.MethodError, match="not a perturbation method"):
        camlens.methods.get_method("refinecam", base="scorecam")
