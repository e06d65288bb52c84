"""Invariants: batches equal single calls, top-k equals k calls, the model is left as found."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

import camlens
from camlens.backends.torch import TorchBackend
from nets import NonLinearHead, Raising, TrunkHead
from vits import TinyViT

METHODS = sorted({cls.name for cls in camlens.methods.REGISTRY.values()})
#: Methods that explain the input's pixels: they take no layer.
PIXEL_LEVEL = {
    cls.name for cls in camlens.methods.REGISTRY.values() if getattr(cls, "pixel_level", False)
}


#: Methods that read attention maps: their tests here run on a seeded ViT (``vits.TinyViT``).
ATTENTION = {
    cls.name for cls in camlens.methods.REGISTRY.values() if getattr(cls, "reads_attention", False)
}


def _layer(method: str, name: str) -> str | None:
    """The layer a test explains with ``method``: none for a pixel-level method, nor for an
    attention method (every block's attention layer)."""
    return None if method in PIXEL_LEVEL | ATTENTION else name


#: Methods defined only where a global average pool reads the layer (not NonLinearHead's).
NEEDS_POOLED_LAYER = {"cam"}


def _snapshot(model: torch.nn.Module) -> dict[str, object]:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modes": [(n, m.training) for n, m in model.named_modules()],
        "flags": [(n, p.requires_grad) for n, p in model.named_parameters()],
        "grads": [(n, p.grad) for n, p in model.named_parameters()],
        "hooks": [
            (n, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for n, m in model.named_modules()
        ],
        "grad_mode": torch.is_grad_enabled(),
    }


def _assert_same(before: dict[str, object], after: dict[str, object]) -> None:
    sb, sa = before["state"], after["state"]
    assert isinstance(sb, dict) and isinstance(sa, dict)
    assert sb.keys() == sa.keys()
    for key in sb:
        assert torch.equal(sb[key], sa[key]), key
    for field in ("modes", "flags", "hooks", "grad_mode"):
        assert before[field] == after[field], field
    assert all(g is None for _, g in after["grads"])  # type: ignore[attr-defined]


def _mixed_mode_net() -> TrunkHead:
    net = TrunkHead()
    net.train()
    net.trunk[1].eval()  # a frozen BN inside a training model: mixed modes must survive
    net.fc.weight.requires_grad_(False)  # a frozen parameter must stay frozen, others trainable
    return net


def _mixed_mode_vit() -> TinyViT:
    net = TinyViT()
    net.train()
    net.blocks[0].eval()  # mixed modes must survive
    net.head.weight.requires_grad_(False)
    return net


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_single_calls(method: str) -> None:
    net = TrunkHead() if method in NEEDS_POOLED_LAYER else NonLinearHead()
    x = torch.randn(4, 3, 16, 16)
    if method in ATTENTION:
        net, x = TinyViT().eval(), torch.randn(4, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", camlens.CamlensWarning)
        layer = _layer(method, "trunk")
        batch = camlens.explain(net, x, method=method, layer=layer, target=2)
        singles = [
            camlens.explain(net, x[i : i + 1], method=method, layer=layer, target=2)
            for i in range(4)
        ]
    np.testing.assert_allclose(batch.maps, np.concatenate([s.maps for s in singles]), atol=1e-5)
    np.testing.assert_allclose(
        batch.raw, np.concatenate([s.raw for s in singles]), rtol=1e-5, atol=1e-5
    )
    assert np.isfinite(batch.maps).all()


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "eigengradcam"])
def test_topk_equals_k_single_target_calls(method: str) -> None:
    net = TrunkHead(classes=6)
    x = torch.randn(3, 3, 16, 16)
    cam = camlens.Explainer(net, "trunk", method=method)
    top = cam(x, target=camlens.TopK(3))
    assert top.maps.shape == (9, 16, 16) and top.targets_per_image == 3
    np.testing.assert_array_equal(top.image_index, np.repeat(np.arange(3), 3))
    with torch.no_grad():
        order = torch.argsort(net.eval()(x), dim=1, descending=True)[:, :3].numpy()
    np.testing.assert_array_equal(top.units.reshape(3, 3), order)
    for j in range(3):
        single = cam(x, target=order[:, j].tolist())
        np.testing.assert_allclose(top.maps.reshape(3, 3, 16, 16)[:, j], single.maps, atol=1e-5)
        np.testing.assert_allclose(top.scores.reshape(3, 3)[:, j], single.scores, rtol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_model_left_as_found_after_success(method: str) -> None:
    net: torch.nn.Module = _mixed_mode_net()
    x = torch.randn(2, 3, 16, 16)
    if method in ATTENTION:
        net, x = _mixed_mode_vit(), torch.randn(2, 3, 32, 32)
    reference = copy.deepcopy(net)
    before = _snapshot(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", camlens.CamlensWarning)
        camlens.explain(net, x, method=method)
    _assert_same(before, _snapshot(net))
    # Still the same function: same outputs in its (training) mode as an untouched copy.
    torch.manual_seed(1)
    out = net(x)
    torch.manual_seed(1)
    np.testing.assert_allclose(out.detach(), reference(x).detach(), atol=1e-6)


@pytest.mark.parametrize("option", ["eigen_smooth", "aug_smooth"])
@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_model_left_as_found_with_smoothing(method: str, option: str) -> None:
    net = _mixed_mode_net()
    before = _snapshot(net)
    camlens.explain(net, torch.randn(2, 3, 16, 16), method=method, **{option: True})
    _assert_same(before, _snapshot(net))
    raising = Raising().train()
    before = _snapshot(raising)
    with pytest.raises(camlens.BadInputError, match="boom inside the model"):
        camlens.explain(
            raising, torch.randn(1, 3, 8, 8), method=method, layer="net.trunk", **{option: True}
        )
    _assert_same(before, _snapshot(raising))


@pytest.mark.parametrize("method", METHODS)
def test_model_left_as_found_after_an_exception_in_the_model(method: str) -> None:
    net = Raising()
    net.train()
    before = _snapshot(net)
    with pytest.raises(camlens.BadInputError, match="boom inside the model"):
        camlens.explain(
            net, torch.randn(1, 3, 8, 8), method=method, layer=_layer(method, "net.trunk")
        )
    _assert_same(before, _snapshot(net))


def test_model_left_as_found_after_a_method_error() -> None:
    # CAM refuses a layer that no global pool reads, after the probe has run.
    net = NonLinearHead()
    before = _snapshot(net)
    with pytest.raises(camlens.MethodError):
        camlens.explain(net, torch.randn(1, 3, 8, 8), method="cam", layer="trunk")
    _assert_same(before, _snapshot(net))


def test_model_left_as_found_after_a_bad_target() -> None:
    net = TrunkHead()
    before = _snapshot(net)
    with pytest.raises(camlens.BadTargetError):
        camlens.explain(net, torch.randn(1, 3, 8, 8), target=99)
    _assert_same(before, _snapshot(net))


def test_eval_mode_is_used_during_the_call() -> None:
    # Dropout/BN in the user's training mode would make maps random; camlens explains eval.
    net = TrunkHead()
    x = torch.randn(2, 3, 16, 16)
    in_eval = camlens.explain(net.eval(), x, layer="trunk")
    in_train = camlens.explain(net.train(), x, layer="trunk")
    np.testing.assert_allclose(in_eval.maps, in_train.maps, atol=1e-6)
    assert net.training


def test_eval_mode_reaches_shared_modules_and_skips_empty_slots() -> None:
    net = TrunkHead()
    net.register_module("unused", None)
    net.alias = net.trunk[1]  # the BatchNorm again, under a second parent
    x = torch.randn(2, 3, 16, 16)
    in_eval = camlens.explain(net.eval(), x, layer="trunk")
    in_train = camlens.explain(net.train(), x, layer="trunk")
    np.testing.assert_allclose(in_eval.maps, in_train.maps, atol=1e-6)
    assert all(m.training for m in net.modules())


@pytest.mark.parametrize("context", ["no_grad", "inference_mode", "enable_grad"])
def test_works_whatever_the_callers_grad_mode(context: str) -> None:
    net = TrunkHead()
    x = torch.randn(2, 3, 16, 16)
    expected = camlens.explain(net, x, layer="trunk")
    ctx = {
        "no_grad": torch.no_grad,
        "inference_mode": torch.inference_mode,
        "enable_grad": torch.enable_grad,
    }[context]
    with ctx():
        inside = torch.randn(2, 3, 16, 16)  # created inside: an inference tensor there
        inside.copy_(x)
        got = camlens.explain(net, inside, layer="trunk")
        mode_after = torch.is_grad_enabled()
    np.testing.assert_allclose(got.maps, expected.maps, atol=1e-6)
    assert mode_after == (context == "enable_grad")


def test_no_gradient_below_the_layer_nor_for_inputs_or_parameters() -> None:
    net = TrunkHead()
    below: list[str] = []
    net.trunk[0].register_full_backward_hook(lambda *a: below.append("conv0"))
    fired: list[str] = []
    for name, p in net.named_parameters():
        p.register_hook(lambda g, name=name: fired.append(name))
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    camlens.explain(net, x, layer="trunk.3")
    assert below == [] and fired == []
    assert x.grad is None and all(p.grad is None for p in net.parameters())


def test_nothing_kept_between_calls() -> None:
    net = TrunkHead()
    cam = camlens.GradCAM(net, layer="trunk")
    attrs = set(vars(cam))
    a = cam(torch.randn(2, 3, 16, 16))
    assert set(vars(cam)) == attrs
    assert not any(isinstance(v, torch.Tensor) for v in vars(cam).values())
    with pytest.raises((AttributeError, TypeError, ValueError)):
        a.maps[0, 0, 0] = 5.0  # frozen results


def test_explanation_records_its_provenance() -> None:
    net = TrunkHead()
    exp = camlens.GradCAMPlusPlus(net)(torch.randn(2, 3, 18, 14), target=camlens.Output(1, -1))
    assert exp.method == "gradcam++"
    assert exp.layers == ("trunk",)
    assert exp.input_size == (18, 14)
    assert exp.target == "output 1 (down)"
    assert exp.framework == "torch" and exp.version == camlens.__version__
    np.testing.assert_array_equal(exp.signs, [-1.0, -1.0])


def test_outputs_are_the_model_output_per_image() -> None:
    torch.manual_seed(0)
    model = NonLinearHead().eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = model(x).reshape(3, -1).numpy()
    exp = camlens.GradCAM(model, layer="trunk")(x, target=camlens.TopK(2))
    assert exp.outputs is not None and exp.outputs.shape == expected.shape
    np.testing.assert_allclose(exp.outputs, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(exp.units.reshape(3, 2), np.argsort(-expected, axis=1)[:, :2])


def _placement_models() -> list[torch.nn.Module]:
    pre_order = torch.nn.Module()  # parents before children, children in order
    pre_order.a = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1).double())
    pre_order.b = torch.nn.Conv2d(4, 2, 1).half()
    shared = torch.nn.Conv2d(3, 4, 1).double()  # met first inside a, again as c
    first_shared = torch.nn.Module()
    first_shared.a = torch.nn.Sequential(torch.nn.Identity(), shared)
    first_shared.b = torch.nn.Conv2d(4, 2, 1).half()
    first_shared.c = shared
    int_buffer_first = torch.nn.Module()
    int_buffer_first.register_buffer("steps", torch.zeros(1, dtype=torch.long))
    int_buffer_first.conv = torch.nn.Conv2d(3, 4, 1).to(torch.bfloat16)
    buffers_only = torch.nn.Module()
    buffers_only.inner = torch.nn.Module()
    buffers_only.inner.register_buffer("kernel", torch.ones(3, dtype=torch.float64))
    no_tensors = torch.nn.ReLU()
    return [
        TrunkHead().double(),
        pre_order,
        first_shared,
        int_buffer_first,
        buffers_only,
        no_tensors,
    ]


@pytest.mark.parametrize("model", _placement_models(), ids=lambda m: type(m).__name__)
def test_inputs_take_the_place_of_the_models_first_floating_tensor(model: torch.nn.Module) -> None:
    # torch's own order: parameters, then buffers; the first floating one sets device and dtype.
    tensors = [*model.parameters(), *model.buffers()]
    first = next((t for t in tensors if t.is_floating_point()), None)
    default = (torch.device("cpu"), torch.float32)
    expected = default if first is None else (first.device, first.dtype)
    backend = TorchBackend(model)
    assert backend._placement() == expected
    assert backend.prepare(np.zeros((1, 3, 2, 2), np.float32)).dtype == expected[1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_half_precision_models_give_the_float32_maps(dtype: torch.dtype, method: str) -> None:
    # Inputs follow the model's dtype; results come back as float32 (NumPy has no bfloat16).
    x = torch.randn(2, 3, 16, 16)
    full = camlens.explain(TrunkHead(), x, layer="trunk", method=method)
    half = camlens.explain(TrunkHead().to(dtype), x, layer="trunk", method=method)
    assert half.maps.dtype == np.float32 and half.outputs is not None
    assert half.outputs.dtype == np.float32
    np.testing.assert_array_equal(half.units, full.units)
    np.testing.assert_allclose(half.maps, full.maps, atol=0.02)
    np.testing.assert_allclose(half.scores, full.scores, rtol=0.02)
