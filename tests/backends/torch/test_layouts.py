"""Token and channels-last layers on torch: placed on their grid, or refused in words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import camlens
from vits import (
    ChannelsLastNet,
    FlatViT,
    TinyViT,
    captured,
    eigencam_raw,
    gradcam_raw,
    tokens_to_grid,
)


@pytest.mark.parametrize("prefix", [1, 2])
def test_gradcam_on_a_token_layer_equals_the_formula_on_reshaped_tokens(prefix: int) -> None:
    model = TinyViT(prefix=prefix).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    exp = camlens.GradCAM(model, "blocks.1.norm1")(x, target=[0, 3, 4])
    a, g = captured(model, model.blocks[1].norm1, x, [0, 3, 4])
    ref = gradcam_raw(tokens_to_grid(a, prefix, (8, 8)), tokens_to_grid(g, prefix, (8, 8)))
    assert exp.raw.shape == (3, 8, 8) and exp.maps.shape == (3, 32, 32)
    np.testing.assert_allclose(exp.raw, ref, atol=1e-5)


def test_eigencam_on_a_token_layer_equals_the_formula() -> None:
    model = TinyViT().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    exp = camlens.EigenCAM(model, "blocks.1.norm1")(x)
    a, _ = captured(model, model.blocks[1].norm1, x, [0, 0])
    np.testing.assert_allclose(exp.raw, eigencam_raw(tokens_to_grid(a, 1, (8, 8))), atol=1e-5)


def test_the_automatic_layer_of_a_vit_is_the_last_blocks_first_norm() -> None:
    model = TinyViT(depth=3).eval()
    cam = camlens.GradCAM(model)
    exp = cam(torch.randn(1, 3, 32, 32))
    assert cam.layers == ("blocks.2.norm1",) == exp.layers
    rows = {row.name: row for row in camlens.layers(model, input_size=(32, 32))}
    assert rows["blocks.2.norm1"].auto and rows["blocks.2.norm1"].candidate
    assert rows["blocks.2.norm1"].layout == "tokens 1+8x8"
    assert rows["patch_embed"].layout == "nchw 8x8"
    assert not rows["blocks.2.attn"].candidate  # a tuple output


@pytest.mark.parametrize(("lists", "picked"), [(False, "norm1_2"), (True, "norm1.2")])
def test_a_flat_vit_gets_its_last_blocks_first_norm_too(lists: bool, picked: str) -> None:
    # Every block's norms held by the model itself, or by one list per kind of layer: the last
    # block's first norm is the last norm before the last attention layer, not the model's
    # first norm (nor the first of the last list's).
    nested = TinyViT(depth=3).eval()
    flat = FlatViT(nested, lists=lists).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    cam = camlens.GradCAM(flat)
    exp = cam(x, target=[1, 2])
    assert cam.layers == (picked,) == exp.layers
    twin = camlens.GradCAM(nested)(x, target=[1, 2])
    assert twin.layers == ("blocks.2.norm1",) and np.abs(twin.raw).max() > 0
    np.testing.assert_allclose(exp.raw, twin.raw, rtol=1e-5, atol=1e-7)


def test_a_batch_on_token_layers_equals_its_single_calls() -> None:
    model = TinyViT().eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    cam = camlens.GradCAM(model, "blocks.1.norm1")
    whole = cam(x).maps
    for i in range(3):
        np.testing.assert_allclose(whole[i], cam(x[i : i + 1]).maps[0], atol=1e-5)


def test_an_ambiguous_token_grid_names_grid_and_grid_fixes_it() -> None:
    model = TinyViT(patch=16).eval()  # 4 patches + 1: also 1 patch after 4 prefix tokens
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with pytest.raises(camlens.LayerError, match=r"grid=\(h, w\)") as info:
        camlens.GradCAM(model, "blocks.1.norm1")(x)
    assert "2x2 after 1 prefix" in str(info.value) and "1x1 after 4 prefix" in str(info.value)
    assert not model.blocks[1].norm1._forward_hooks  # nothing left behind
    # The automatic pick does not fall back to the patch embedding without a word.
    with pytest.raises(camlens.LayerError, match="token layers after"):
        camlens.GradCAM(model)(x)
    exp = camlens.GradCAM(model, "blocks.1.norm1", grid=(2, 2))(x, target=[1, 2])
    a, g = captured(model, model.blocks[1].norm1, x, [1, 2])
    ref = gradcam_raw(tokens_to_grid(a, 1, (2, 2)), tokens_to_grid(g, 1, (2, 2)))
    np.testing.assert_allclose(exp.raw, ref, atol=1e-5)


def test_of_two_fitting_grids_the_one_square_patches_tile_is_taken() -> None:
    # 17 tokens on 32x32: 4x4 patches of 8 after a class token, or 3x3 patches that need
    # padding after 8 prefix tokens; only the first tiles the input.
    model = TinyViT(patch=8).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    exp = camlens.GradCAM(model, "blocks.1.norm1")(x, target=[1, 2])
    a, g = captured(model, model.blocks[1].norm1, x, [1, 2])
    ref = gradcam_raw(tokens_to_grid(a, 1, (4, 4)), tokens_to_grid(g, 1, (4, 4)))
    np.testing.assert_allclose(exp.raw, ref, atol=1e-5)
    assert camlens.explain(model, x).layers == ("blocks.1.norm1",)


def test_a_reshape_function_gives_the_same_maps_as_the_inferred_grid() -> None:
    model = TinyViT().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:].reshape(len(t), 8, 8, -1).permute(0, 3, 1, 2)

    auto = camlens.GradCAM(model, "blocks.0.norm2")(x)
    custom = camlens.GradCAM(model, "blocks.0.norm2", reshape=reshape)(x)
    np.testing.assert_allclose(custom.raw, auto.raw, atol=1e-6)
    with pytest.raises(camlens.LayerError, match=r"must return \(N, K, h, w\)"):
        camlens.GradCAM(model, "blocks.0.norm2", reshape=lambda t: t[:, 1:])(x)


def test_a_channels_last_layer_is_explained_on_its_grid() -> None:
    model = ChannelsLastNet().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    # By kind (LayerNorm, Linear), by the layer before (GELU), by geometry (Identity).
    for name in ("norm", "mix", "act", "out"):
        layer = getattr(model, name)
        exp = camlens.GradCAM(model, name)(x, target=[2, 0])
        a, g = captured(model, layer, x, [2, 0])
        ref = gradcam_raw(a.transpose(0, 3, 1, 2), g.transpose(0, 3, 1, 2))
        np.testing.assert_allclose(exp.raw, ref, atol=1e-5)
    rows = {row.name: row for row in camlens.layers(model, input_size=(32, 32))}
    assert rows["out"].layout == "nhwc 8x8" and rows["stem"].layout == "nchw 8x8"


def test_a_swapped_layout_that_cannot_be_told_raises_and_layout_decides() -> None:
    model = ChannelsLastNet(width=8).eval()  # (N, 8, 8, 8): either reading is an 8x8 map
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with pytest.raises(camlens.LayerError, match="layout='nchw' or layout='nhwc'"):
        camlens.GradCAM(model, "out")(x)
    assert not model.out._forward_hooks
    exp = camlens.GradCAM(model, "out", layout="nhwc")(x, target=[1, 1])
    a, g = captured(model, model.out, x, [1, 1])
    ref = gradcam_raw(a.transpose(0, 3, 1, 2), g.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(exp.raw, ref, atol=1e-5)
    # What the layer is decides where the geometry cannot (a LayerNorm acts on the last axis),
    # and so does the layer defined before it (a GELU after a Linear).
    for name in ("norm", "act"):
        by_kind = camlens.GradCAM(model, name)(x, target=[1, 1])
        a, g = captured(model, getattr(model, name), x, [1, 1])
        ref = gradcam_raw(a.transpose(0, 3, 1, 2), g.transpose(0, 3, 1, 2))
        np.testing.assert_allclose(by_kind.raw, ref, atol=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layout": "nlc"}, "layout must be one of"),
        ({"grid": (8, 0)}, "two positive ints"),
        ({"reshape": len, "grid": (8, 8)}, "drop layout= and grid="),
        ({"layout": "nchw"}, "needs a 4-D output"),
        ({"grid": (9, 9)}, "needs 81 patch tokens"),
    ],
)
def test_bad_layout_options_are_refused_in_words(options: dict, message: str) -> None:
    model = TinyViT().eval()
    with pytest.raises(camlens.LayerError, match=message):
        camlens.GradCAM(model, "blocks.0.norm1", **options)(torch.randn(1, 3, 32, 32))


def test_a_layer_whose_batch_axis_is_not_first_is_refused() -> None:
    class SequenceFirst(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vit = TinyViT()
            self.seq = torch.nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.vit.patch_embed(x).flatten(2).permute(2, 0, 1)  # (L, N, C)
            return self.vit.head(self.seq(t).mean(0))

    with pytest.raises(camlens.LayerError, match="batch axis is not first"):
        camlens.GradCAM(SequenceFirst().eval(), "seq")(torch.randn(2, 3, 32, 32))


def test_ablation_cam_rebuilds_channels_last_outputs_and_refuses_prefix_tokens() -> None:
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    model = ChannelsLastNet().eval()
    exp = camlens.AblationCAM(model, "mix")(x, target=3)
    a, _ = captured(model, model.mix, x, [3])
    # Ablation-CAM's weights from the definition: w_k = (y - y_k) / y, y_k with channel k of
    # the layer zeroed (re-run by hand from the layer: mean, head).
    with torch.no_grad():
        acts = torch.from_numpy(a).float()
        y = model.head(model.act(acts).mean(dim=(1, 2)))[0, 3]
        w = []
        for k in range(acts.shape[-1]):
            ablated = acts.clone()
            ablated[..., k] = 0
            w.append(float((y - model.head(model.act(ablated).mean(dim=(1, 2)))[0, 3]) / y))
    ref = (np.array(w)[None, :, None, None] * a.transpose(0, 3, 1, 2)).sum(axis=1)
    np.testing.assert_allclose(exp.raw, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(camlens.MethodError, match="prefix token"):
        camlens.AblationCAM(TinyViT().eval(), "blocks.1.norm1")(x)
    with pytest.raises(camlens.MethodError, match="prefix token"):
        camlens.ReciproCAM(TinyViT().eval(), "blocks.1.norm1")(x)


@pytest.mark.filterwarnings("ignore::camlens.MapStrengthWarning")
def test_recipro_cam_feeds_its_masked_maps_back_in_the_layers_own_layout() -> None:
    # Recipro-CAM (Byun & Lee, 2022): for each location (i, j) the layer's output is kept at
    # (i, j) only, the network after it re-runs, and the map at (i, j) is the target's softmax
    # probability. Written on a channels-last layer: the re-run takes (N, h, w, C) as the layer
    # gives it, so a map fed back channels-first would be refused or wrong.
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    model = ChannelsLastNet().eval()
    exp = camlens.ReciproCAM(model, "mix")(x, target=2)
    a, _ = captured(model, model.mix, x, [2])
    acts = torch.from_numpy(a).float()[0]  # (h, w, C)
    h, w, _ = acts.shape
    ref = np.zeros((h, w))
    with torch.no_grad():
        for i in range(h):
            for j in range(w):
                kept = torch.zeros_like(acts)
                kept[i, j] = acts[i, j]
                logits = model.head(model.act(kept[None]).mean(dim=(1, 2)))
                ref[i, j] = float(torch.softmax(logits, dim=-1)[0, 2])
    np.testing.assert_allclose(exp.raw[0], ref, rtol=1e-4, atol=1e-6)


def test_a_layers_declared_layout_is_read_once_per_explainer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a layer's modules say of its layout walks every module inside it (209 in
    # MobileNetV2's `features`): an explainer reads it once, and its later calls give the
    # same maps as a fresh explainer's.
    from camlens.backends.torch import _probe

    walks: list[str] = []
    real = _probe.evidence
    monkeypatch.setattr(_probe, "evidence", lambda module: walks.append("walk") or real(module))
    model = TinyViT(prefix=1).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    cam = camlens.GradCAM(model, "blocks.1.norm1")
    first, second, third = (cam(x).raw for _ in range(3))
    assert walks == ["walk"]
    np.testing.assert_array_equal(first, third)
    np.testing.assert_allclose(camlens.GradCAM(model, "blocks.1.norm1")(x).raw, second)
    assert walks == ["walk", "walk"]
