"""Targets (classes, raw outputs, top-k, functions), output selection and layer resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import camlens
from camlens.backends.torch._targets import resolve
from nets import MiniResNet, TrunkHead, TupleOut


def test_output_sign_flips_the_signed_map() -> None:
    net = TrunkHead(classes=1)
    x = torch.randn(2, 3, 16, 16)
    up = camlens.explain(net, x, layer="trunk", target=camlens.Output(0), relu=False)
    down = camlens.explain(net, x, layer="trunk", target=camlens.Output(0, sign=-1), relu=False)
    np.testing.assert_allclose(down.raw, -up.raw, atol=1e-7)
    np.testing.assert_allclose(down.maps, -up.maps, atol=1e-6)
    assert up.maps.min() < 0 <= up.maps.max() <= 1  # signed maps in [-1, 1]
    with torch.no_grad():
        np.testing.assert_allclose(up.scores, net.eval()(x)[:, 0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(up.scores, down.scores)  # the model's value, not the sign


def test_callable_target_equals_the_class_it_selects() -> None:
    net = TrunkHead()
    x = torch.randn(3, 3, 16, 16)
    by_class = camlens.explain(net, x, target=4)
    by_fn = camlens.explain(net, x, target=lambda out: out[:, 4])
    np.testing.assert_allclose(by_fn.maps, by_class.maps, atol=1e-6)
    assert by_fn.units.tolist() == [-1, -1, -1]


def test_callable_target_with_several_scores_per_image() -> None:
    net = TrunkHead()
    x = torch.randn(2, 3, 16, 16)
    both = camlens.explain(net, x, target=lambda out: out[:, [1, 4]])
    assert both.maps.shape == (4, 16, 16)
    np.testing.assert_allclose(both.maps[1::2], camlens.explain(net, x, target=4).maps, atol=1e-6)


def test_nested_class_lists_give_several_targets_per_image() -> None:
    net = TrunkHead()
    x = torch.randn(2, 3, 16, 16)
    exp = camlens.explain(net, x, target=[[0, 1], [2, 4]])
    assert exp.units.tolist() == [0, 1, 2, 4] and exp.image_index.tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(
        exp.maps[2], camlens.explain(net, x[1:], target=2).maps[0], atol=1e-6
    )


def test_default_target_is_the_top1_class() -> None:
    net = TrunkHead()
    x = torch.randn(4, 3, 16, 16)
    exp = camlens.explain(net, x)
    with torch.no_grad():
        logits = net.eval()(x)
    np.testing.assert_array_equal(exp.units, logits.argmax(1).numpy())
    np.testing.assert_allclose(exp.scores, logits.max(1).values.numpy(), rtol=1e-6)
    assert exp.target == "top-1 class"


@pytest.mark.parametrize(
    ("as_dict", "selector"), [(False, 0), (True, "logits"), (True, lambda out: out["logits"])]
)
def test_output_selection(as_dict: bool, selector: object) -> None:
    model = TupleOut(as_dict=as_dict)
    x = torch.randn(2, 3, 16, 16)
    got = camlens.explain(model, x, layer="net.trunk", output=selector)
    expected = camlens.explain(model.net, x, layer="trunk")
    np.testing.assert_allclose(got.maps, expected.maps, atol=1e-6)


def test_numpy_inputs_equal_tensor_inputs() -> None:
    net = TrunkHead()
    x = torch.randn(2, 3, 16, 16)
    a = camlens.explain(net, x)
    b = camlens.explain(net, x.numpy().astype(np.float64))
    np.testing.assert_allclose(a.maps, b.maps, atol=1e-6)


def test_auto_layer_is_the_last_feature_map_before_pooling() -> None:
    net = MiniResNet()
    cam = camlens.GradCAM(net)
    assert cam.layers is None
    exp = cam(torch.randn(1, 3, 16, 16))
    assert exp.layers == ("layer2",) and cam.layers == ("layer2",)
    same = camlens.explain(net, torch.randn(1, 3, 16, 16), layer=net.layer2[1])
    assert same.layers == ("layer2.1",)


def test_layer_names_module_objects_and_brackets_agree() -> None:
    net = MiniResNet()
    x = torch.randn(2, 3, 16, 16)
    by_name = camlens.explain(net, x, layer="layer2.1.conv2")
    by_bracket = camlens.explain(net, x, layer="layer2[1].conv2")
    by_object = camlens.explain(net, x, layer=net.layer2[1].conv2)
    for other in (by_bracket, by_object):
        np.testing.assert_array_equal(by_name.maps, other.maps)
        assert other.layers == ("layer2.1.conv2",)


def test_a_list_of_layers_combines_their_maps() -> None:
    net = MiniResNet()
    x = torch.randn(2, 3, 16, 16)
    both = camlens.explain(net, x, layer=["layer1", "layer2"], target=2)
    one = camlens.explain(net, x, layer="layer1", target=2)
    two = camlens.explain(net, x, layer="layer2", target=2)
    mean = (one.maps + two.maps) / 2
    lo = mean.min(axis=(1, 2), keepdims=True)
    hi = mean.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(both.maps, (mean - lo) / (hi - lo), atol=1e-5)
    assert both.layers == ("layer1", "layer2")


def test_overlay_from_an_explanation() -> None:
    net = TrunkHead()
    x = torch.rand(2, 3, 16, 16)
    exp = camlens.explain(net, x, target=camlens.TopK(2))
    pictures = exp.overlay(x)  # the model's own float CHW tensors are accepted
    assert len(pictures) == 4 and pictures[0].size == (16, 16) and pictures[0].mode == "RGB"
    with pytest.raises(camlens.BadInputError, match="got 1 images for an explanation of 2"):
        exp.overlay(x[:1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model_matches_cpu() -> None:
    net = TrunkHead()
    x = torch.randn(2, 3, 16, 16)
    cpu = camlens.explain(net, x, target=camlens.TopK(2))
    gpu = camlens.explain(net.cuda(), x, target=camlens.TopK(2))  # inputs follow the model
    np.testing.assert_allclose(gpu.maps, cpu.maps, atol=1e-4)


@pytest.mark.parametrize("k", [1, 3])
def test_top_k_ranks_ties_to_the_lower_index_and_nan_last(k: int) -> None:
    # Written out by hand: row 0 ties at the top (units 1 and 3), row 1 has a NaN that must
    # not win, row 2 is all equal (units in index order).
    values = np.array(
        [
            [0.5, 2.0, -1.0, 2.0, 0.0],
            [np.nan, 1.0, 3.0, 2.0, 3.5],
            [7.0, 7.0, 7.0, 7.0, 7.0],
        ]
    )
    expected = np.array([[1, 3, 0], [4, 2, 3], [0, 1, 2]])[:, :k]
    units = camlens.TopK(k).ranked_units(values)
    assert units.dtype == np.int64
    np.testing.assert_array_equal(units, expected)
    only_nan = camlens.TopK(k).ranked_units(np.array([[np.nan, 1.0, 0.0, 2.0]]))
    np.testing.assert_array_equal(only_nan, np.array([[3, 1, 2]])[:, :k])

    # The same ranks when resolved on a model's tensor output (k = 1 picks on the tensor), and
    # the scores are the picked outputs, differentiable.
    output = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    scores, resolved = resolve(camlens.TopK(k), output)
    np.testing.assert_array_equal(resolved.units, expected)
    picked = np.take_along_axis(values, expected, axis=1)
    np.testing.assert_array_equal(resolved.values, picked)
    np.testing.assert_array_equal(scores.detach().numpy(), picked)
    (grad,) = torch.autograd.grad(scores.sum(), output)
    chosen = np.zeros(values.shape)
    np.put_along_axis(chosen, expected, 1.0, axis=1)
    np.testing.assert_array_equal(grad.numpy(), chosen)
    _, all_nan = resolve(camlens.TopK(1), torch.full((1, 3), float("nan")))
    np.testing.assert_array_equal(all_nan.units, [[0]])


@pytest.mark.filterwarnings("ignore::camlens.MapStrengthWarning")  # random weights: some empty
def test_a_loaders_label_tensor_is_one_class_per_image() -> None:
    net = TrunkHead()
    x = torch.randn(4, 3, 16, 16)
    labels = torch.tensor([3, 0, 4, 1])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, labels), batch_size=2)
    cam = camlens.GradCAM(net, "trunk")
    by_list = cam(x, target=[3, 0, 4, 1])
    maps = []
    for xb, yb in loader:
        exp = cam(xb, target=yb)
        maps.append(exp.maps)
    np.testing.assert_allclose(np.concatenate(maps), by_list.maps, atol=1e-6)
    # A NumPy label array, one of shape (N, 1), a tensor that needs grad, and a 0-d label.
    np.testing.assert_allclose(cam(x, target=labels.numpy()).maps, by_list.maps, atol=1e-6)
    assert cam(x, target=labels[:, None]).units.tolist() == [3, 0, 4, 1]
    assert cam(x[:1], target=torch.tensor(3)).units.tolist() == [3]
    with pytest.raises(camlens.BadTargetError, match="not class indices"):
        cam(x, target=labels.float())
