"""Poly-CAM: masked-input channel weights at several layers, fused coarse to fine (the paper)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camlens
from camlens._layers import stage_layers
from camlens.backends.base import LayerInfo

LAYERS = ["s1", "s2", "s3"]


class ThreeStages(nn.Module):
    """Feature maps at 16x16, 8x8 and 4x4 for a 16x16 input, then a GAP + linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.s1 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.s2 = nn.Sequential(nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.ReLU())
        self.s3 = nn.Sequential(nn.Conv2d(5, 6, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(6, 3)
        with torch.no_grad():  # an input-driven head: masking the input moves the scores
            self.fc.weight.mul_(20.0)
            for conv in (self.s1[0], self.s2[0], self.s3[0], self.fc):
                conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.s3(self.s2(self.s1(x))).mean(dim=(2, 3)))


def _up(m: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    return F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]


def _reference(
    net: ThreeStages, x: torch.Tensor, c: int, variant: str, *, lnorm: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Poly-CAM written from the paper for one image ``(3, H, W)``: (final map, fused raw)."""
    size = tuple(x.shape[-2:])
    with torch.no_grad():
        p = lambda batch: torch.softmax(net(batch), dim=1)[:, c]  # noqa: E731
        a1 = net.s1(x[None])
        a2 = net.s2(a1)
        a3 = net.s3(a2)
        base = p(x[None])[0]
        maps = []
        for acts in (a3[0], a2[0], a1[0]):  # coarsest first
            weights = []
            for a in acts:
                up = _up(a, size)
                span = up.max() - up.min()
                mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
                plus = p((x * mask)[None])[0]
                minus = base - p((x * (1 - mask))[None])[0]
                w = {"plus": plus, "minus": minus.clamp(min=0)}.get(variant)
                weights.append((plus + minus).clamp(min=0) if w is None else w)
            maps.append(torch.relu(sum(w * a for w, a in zip(weights, acts, strict=True))))
        fused = maps[0]
        for layer in maps[1:]:
            if lnorm:
                local = _up(_up(layer, tuple(fused.shape)), tuple(layer.shape))
                layer = layer / local.clamp(min=1e-12)
            fused = torch.relu(layer * _up(fused, tuple(layer.shape)))
        final = _up(fused, size)
        final = (final - final.min()) / (final.max() - final.min())
    return final.numpy(), fused.numpy()


@pytest.mark.parametrize("variant", ["plus", "minus", "plusminus"])
def test_polycam_equals_the_papers_fusion_written_out(variant: str) -> None:
    net = ThreeStages().eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    got = camlens.explain(
        net, x, method="polycam", variant=variant, layer=LAYERS, target=None, batch_size=3
    )
    for n, c in enumerate(got.units.tolist()):
        final, fused = _reference(net, x[n], c, variant)
        assert got.raw[n].shape == (16, 16)  # the finest layer's grid
        np.testing.assert_allclose(got.raw[n], fused, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(got.maps[n], final, atol=1e-5)


def test_polycam_without_local_norm_and_in_any_layer_order() -> None:
    net = ThreeStages().eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    got = camlens.explain(
        net, x, method="polycam", local_norm=False, layer=["s2", "s3", "s1"], target=1
    )
    final, fused = _reference(net, x[0], 1, "plus", lnorm=False)
    np.testing.assert_allclose(got.raw[0], fused, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got.maps[0], final, atol=1e-5)
    with_norm = camlens.explain(net, x, method="polycam", layer=LAYERS, target=1)
    assert not np.allclose(with_norm.maps, got.maps, atol=1e-2)  # the option matters


def test_polycam_at_one_layer_is_the_rectified_score_cam_without_baseline() -> None:
    net = ThreeStages().eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    poly = camlens.explain(net, x, method="polycam", layer="s3", target=[0, 1])
    score = camlens.explain(net, x, method="scorecam", layer="s3", target=[0, 1])
    np.testing.assert_allclose(poly.raw, np.maximum(score.raw, 0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(poly.maps, score.maps, atol=1e-6)


def test_polycam_refuses_bad_options() -> None:
    with pytest.raises(camlens.BadInputError, match="variant must be one of"):
        camlens.methods.get_method("polycam", variant="both")
    with pytest.raises(camlens.MethodError, match="drop relu=False"):
        camlens.Explainer(ThreeStages(), LAYERS, method="polycam", relu=False)


def _info(name: str, type_: str, grid: str | None, *, auto: bool = False) -> LayerInfo:
    layout = None if grid is None else f"nchw {grid}"
    return LayerInfo(name, type_, None, grid is not None, auto, layout)


def test_stage_layers_are_the_least_nested_last_layer_of_each_grid() -> None:
    resnet = [  # torch's listing order: a container before its children
        _info("conv1", "Conv2d", "8x8"),
        _info("relu", "ReLU", "8x8"),
        _info("maxpool", "MaxPool2d", "4x4"),
        _info("layer1", "Sequential", "4x4"),
        _info("layer1.0", "Block", "4x4"),
        _info("layer1.0.conv", "Conv2d", "4x4"),
        _info("layer2", "Sequential", "2x2", auto=True),
        _info("layer2.0", "Block", "2x2"),
        _info("fc", "Linear", None),
    ]
    assert stage_layers(resnet) == ["relu", "layer1", "layer2"]
    flat = [  # a Keras listing: padding layers make odd grids
        _info("pad", "ZeroPadding2D", "9x9"),
        _info("c1", "Conv2D", "8x8"),
        _info("c2", "Conv2D", "4x4"),
        _info("c2_pad", "ZeroPadding2D", "5x5"),
        _info("c3", "Conv2D", "2x2", auto=True),
    ]
    assert stage_layers(flat) == ["c1", "c2", "c3"]
    assert stage_layers([_info("fc", "Linear", None)]) == []


def test_polycam_without_a_layer_reads_one_layer_per_stage() -> None:
    net = ThreeStages().eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    got = camlens.explain(net, x, method="polycam", target=1)
    assert got.layers == ("s1", "s2", "s3")
    np.testing.assert_allclose(got.maps[0], _reference(net, x[0], 1, "plus")[0], atol=1e-5)
