"""Bad input gets a clear camlens error, never a framework traceback or a NaN."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import camlens
import camlens.io
import camlens.metrics
from nets import TrunkHead, TupleOut


@pytest.fixture
def net() -> TrunkHead:
    return TrunkHead()


def test_unknown_layer_suggests_close_names(net: TrunkHead) -> None:
    with pytest.raises(camlens.LayerNotFoundError, match=r"'trunkk'.*did you mean 'trunk'"):
        camlens.GradCAM(net, layer="trunkk")


def test_leaf_name_suggests_full_paths() -> None:
    with pytest.raises(camlens.LayerNotFoundError, match=r"did you mean 'net\.fc'"):
        camlens.GradCAM(TupleOut(), layer="fc")


def test_module_not_in_model(net: TrunkHead) -> None:
    with pytest.raises(camlens.LayerNotFoundError, match="not a submodule"):
        camlens.GradCAM(net, layer=torch.nn.Conv2d(3, 3, 1))


def test_layer_without_spatial_output(net: TrunkHead) -> None:
    with pytest.raises(camlens.LayerError, match=r"'fc' outputs shape \(1, 5\).*no spatial"):
        camlens.explain(net, torch.randn(1, 3, 8, 8), layer="fc")


def test_layer_with_1x1_output_warns_and_gives_zero_maps(net: TrunkHead) -> None:
    with pytest.warns(camlens.CamlensWarning) as record:
        exp = camlens.explain(net, torch.randn(1, 3, 8, 8), layer="pool")
    messages = [str(w.message) for w in record]
    assert any("1x1 spatial output" in m for m in messages)
    assert any("set to zeros" in m for m in messages)
    np.testing.assert_array_equal(exp.maps, 0.0)


def test_shared_module_called_twice() -> None:
    relu = torch.nn.ReLU()
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    net = torch.nn.Sequential(
        conv,
        relu,
        torch.nn.Conv2d(4, 4, 1),
        relu,
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    with pytest.raises(camlens.LayerError, match="called more than once"):
        camlens.explain(net, torch.randn(1, 3, 8, 8), layer="1")


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (torch.randn(3, 8, 8), r"no batch axis.*inputs\[None\]"),
        (torch.randn(2, 1, 3, 8, 8), "rank 5"),
        (torch.randn(0, 3, 8, 8), "empty"),
        (torch.full((1, 3, 8, 8), float("nan")), "192 NaN or infinite"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "does not guess preprocessing"),
        ([[1.0]], "torch.Tensor or a NumPy array"),
    ],
)
def test_bad_inputs(net: TrunkHead, inputs: object, message: str) -> None:
    with pytest.raises(camlens.BadInputError, match=message):
        camlens.explain(net, inputs)


def test_wrong_channel_count_is_reported_with_the_input_shape(net: TrunkHead) -> None:
    with pytest.raises(camlens.BadInputError, match=r"shape \(1, 4, 8, 8\)") as info:
        camlens.explain(net, torch.randn(1, 4, 8, 8), layer="trunk")
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (5, r"class 5 is out of range.*5 unit\(s\), indices 0..4"),
        (-1, "class -1 is out of range"),
        ([1, 2, 3], "3 class indices for a batch of 2"),
        (camlens.Output(7), "output 7 is out of range"),
        (camlens.TopK(6), "top-6 asked of an output with only 5"),
        ("cat", "cannot use 'cat' as a target"),
        (lambda out: out.sum(), r"returned shape \(\)"),
    ],
)
def test_bad_targets(net: TrunkHead, target: object, message: str) -> None:
    with pytest.raises(camlens.BadTargetError, match=message):
        camlens.explain(net, torch.randn(2, 3, 8, 8), target=target)


def test_bad_target_values_at_construction() -> None:
    with pytest.raises(camlens.BadTargetError, match="sign must be"):
        camlens.Output(0, sign=2)
    with pytest.raises(camlens.BadTargetError, match="positive int"):
        camlens.TopK(0)


def test_unsupported_model() -> None:
    with pytest.raises(camlens.UnsupportedModelError, match=r"pass a torch\.nn\.Module"):
        camlens.explain(lambda x: x, np.zeros((1, 3, 8, 8), np.float32))


def test_tuple_output_needs_a_selector() -> None:
    with pytest.raises(camlens.UnsupportedModelError, match=r"tuple \(0: \(1, 5\), 1: \(1,\)\)"):
        camlens.explain(TupleOut(), torch.randn(1, 3, 8, 8))


def test_bad_output_selector() -> None:
    with pytest.raises(camlens.UnsupportedModelError, match="'nope' does not select"):
        camlens.explain(TupleOut(as_dict=True), torch.randn(1, 3, 8, 8), output="nope")


def test_target_that_ignores_the_layer() -> None:
    with pytest.raises(camlens.LayerError, match="does not depend on layer"):
        camlens.explain(TrunkHead(), torch.randn(1, 3, 8, 8), target=lambda out: torch.ones(1))


def test_zero_gradient_gives_zero_maps_and_a_warning_not_nan() -> None:
    with pytest.warns(camlens.CamlensWarning, match="constant after ReLU"):
        exp = camlens.explain(TrunkHead(), torch.randn(1, 3, 8, 8), target=lambda o: o[:, 0] * 0)
    assert np.all(exp.maps == 0)


def test_errors_share_one_base_class() -> None:
    for err in (
        camlens.BadInputError,
        camlens.BadTargetError,
        camlens.LayerNotFoundError,
        camlens.LayerError,
        camlens.UnsupportedModelError,
    ):
        assert issubclass(err, camlens.CamlensError)


COUNTS = ["batch_size", "channels", "dpi", "max_size", "n_samples", "n_steps", "steps", "top_n"]


def _count_argument(name: str, folder: Path) -> Callable[[object], object]:
    """The public call that takes the count ``name``, as a function of its value."""
    net = TrunkHead()
    x = torch.randn(1, 3, 8, 8)
    if name == "steps":
        exp = camlens.explain(net, x, layer="trunk", target=1)
        return lambda v: camlens.metrics.deletion(net, x, exp, steps=v)
    if name == "dpi":
        return lambda v: camlens.grid([np.zeros((8, 8, 3))], [np.eye(8)], dpi=v)
    if name == "max_size":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
        return lambda v: camlens.io.read_image(folder / "a.png", max_size=v)
    if name == "channels":
        return lambda v: camlens.layers(net, channels=v)
    method = {"n_samples": camlens.SSCAM, "n_steps": camlens.ISCAM}.get(name, camlens.ScoreCAM)
    return lambda v: method(net, layer="trunk", **{name: v})


@pytest.mark.parametrize("bad", [0, -2, True, 2.0, "3"])
@pytest.mark.parametrize("name", COUNTS)
def test_counts_must_be_positive_ints(name: str, bad: object, tmp_path: Path) -> None:
    call = _count_argument(name, tmp_path)
    with pytest.raises(camlens.BadInputError, match=f"^{name} must be a positive int"):
        call(bad)
    call(np.int64(40 if name == "dpi" else 3))  # NumPy integers are integers
