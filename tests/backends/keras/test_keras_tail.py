"""The Keras tail: the layers after a target layer, run on replaced activations (Ablation-CAM).

CI runs this file under each Keras backend, each in its own process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers, ops  # noqa: E402

from camlens.backends.keras._tail import Tail, make_tail  # noqa: E402
from camlens.errors import BadInputError, LayerError, LayerNotFoundError  # noqa: E402

BACKEND = keras.backend.backend()
SIZE = 71


def _seed_model() -> keras.Model:
    """The seed's shape: Input -> Xception base ("xception") -> GAP -> Dropout -> Dense(1)."""
    keras.utils.set_random_seed(0)
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    inputs = keras.Input((SIZE, SIZE, 3))
    x = base(inputs)
    x = layers.GlobalAveragePooling2D(name="global_average_pooling2d_12")(x)
    x = layers.Dropout(0.5, name="dropout_12")(x)
    outputs = layers.Dense(1, name="dense_12")(x)
    return keras.Model(inputs, outputs, name="age_regressor")


def _resnet_model() -> keras.Model:
    """A flat functional ResNet-like net: stem, two residual blocks (``Add``), GAP, Dense."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((24, 24, 3))
    x = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i in (1, 2):
        skip = x
        y = layers.Conv2D(8, 3, padding="same", name=f"res{i}_conv1")(x)
        y = layers.BatchNormalization(name=f"res{i}_bn1")(y)
        y = layers.ReLU(name=f"res{i}_relu1")(y)
        y = layers.Conv2D(8, 3, padding="same", name=f"res{i}_conv2")(y)
        y = layers.Dropout(0.3, name=f"res{i}_drop")(y)
        x = layers.Add(name=f"res{i}_add")([skip, y])
        x = layers.ReLU(name=f"res{i}_out")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(5, name="logits")(x)
    return keras.Model(inputs, outputs, name="resnetlike")


def _nested_twice() -> keras.Model:
    """Input -> functional "outer" -> (Sequential "inner" -> conv, conv) -> residual Add -> head."""
    keras.utils.set_random_seed(2)
    inner = keras.Sequential(
        [
            keras.Input((12, 12, 4)),
            layers.Conv2D(4, 3, padding="same", activation="relu", name="deep_conv1"),
            layers.Conv2D(4, 3, padding="same", name="deep_conv2"),
        ],
        name="inner",
    )
    x_in = keras.Input((12, 12, 4))
    x = layers.Add(name="outer_add")([x_in, inner(x_in)])
    outer = keras.Model(x_in, layers.ReLU(name="outer_relu")(x), name="outer")
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(4, 1, name="lift")(inputs)
    x = outer(x)
    x = layers.Concatenate(name="cat")([x, layers.Conv2D(2, 1, name="side")(inputs)])
    outputs = layers.Dense(3, name="head")(layers.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(inputs, outputs, name="nested_twice")


class _Subclassed(keras.Model):
    def __init__(self) -> None:
        super().__init__(name="subclassed")
        self.conv1 = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")
        self.conv2 = layers.Conv2D(4, 3, padding="same", name="conv2")
        self.gap = layers.GlobalAveragePooling2D(name="gap")
        self.dense = layers.Dense(2, name="dense")

    def call(self, x: Any) -> Any:
        a = self.conv1(x)
        return self.dense(self.gap(self.conv2(a) + a))


def _subclassed() -> keras.Model:
    keras.utils.set_random_seed(3)
    model = _Subclassed()
    model(np.zeros((1, 10, 10, 3), dtype="float32"))
    return model


def _find(model: Any, *names: str) -> Any:
    for name in names:
        model = model.get_layer(name)
    return model


# name -> (model factory, input size, target layer path, owner path of the target's graph)
CASES: dict[str, tuple[Callable[[], keras.Model], int, tuple[str, ...], tuple[str, ...]]] = {
    "seed_block14": (_seed_model, SIZE, ("xception", "block14_sepconv2_act"), ("xception",)),
    "seed_block13": (_seed_model, SIZE, ("xception", "block13_sepconv2_act"), ("xception",)),
    "resnet_res1": (_resnet_model, 24, ("res1_relu1",), ()),
    "resnet_stem": (_resnet_model, 24, ("stem_relu",), ()),
    "nested_twice": (_nested_twice, 12, ("outer", "inner", "deep_conv1"), ("outer", "inner")),
}

_models: dict[Callable[[], keras.Model], keras.Model] = {}


def _model(factory: Callable[[], keras.Model]) -> keras.Model:
    if factory not in _models:  # built once per module: Xception is slow to build
        _models[factory] = factory()
    return _models[factory]


def _image(size: int, channels: int = 3, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    return ops.convert_to_tensor(rng.uniform(-1, 1, (1, size, size, channels)).astype("float32"))


def _activation(model: keras.Model, owner: tuple[str, ...], layer: Any, image: Any) -> Any:
    """The layer's true output, from a sub-model of its own graph (apart from camlens)."""
    outer = model
    x = image
    for name in owner:  # feed each nested model the input it receives in its parent
        inner = outer.get_layer(name)
        (node,) = [n for ns in outer._nodes_by_depth.values() for n in ns if n.operation is inner]
        fed = node.input_tensors[0]
        if not any(fed is t for t in outer.inputs):
            x = keras.Model(outer.inputs, fed)(x, training=False)
        outer = inner
    return keras.Model(outer.inputs, layer.output)(x, training=False)


def _np(x: Any) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def _close(actual: Any, expected: Any) -> None:
    expected = _np(expected)
    scale = max(float(np.abs(expected).max()), 1e-30)
    np.testing.assert_allclose(_np(actual), expected, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("case", sorted(CASES))
def test_tail_equals_the_whole_model(case: str) -> None:
    factory, size, path, owner = CASES[case]
    model = _model(factory)
    layer = _find(model, *path)
    tail = make_tail(model, layer)
    assert tail.exact_tail_only
    image = _image(size)
    true = _activation(model, owner, layer, image)
    # The true activation gives the model's own output.
    _close(tail(image, true), model(image, training=False))
    # Random replacements (B = 5): the tail equals the whole model with the layer replaced.
    rng = np.random.default_rng(4)
    replacements = ops.convert_to_tensor(
        rng.normal(size=(5, *true.shape[1:])).astype("float32") * float(_np(true).std() + 1)
    )
    whole = Tail(model, layer, None)
    assert not whole.exact_tail_only
    expected = whole(image, replacements)
    got = tail(image, replacements)
    assert tuple(got.shape) == tuple(expected.shape) == (5, *model.outputs[0].shape[1:])
    _close(got, expected)
    assert np.ptp(_np(got), axis=0).max() > 0  # the replacements matter


def test_tail_runs_only_the_layers_after_the_target() -> None:
    model = _model(_seed_model)
    tail = make_tail(model, _find(model, "xception", "block14_sepconv2_act"))
    assert tail.levels is not None
    outer, base = tail.levels
    assert [n.operation.name for n in outer.tail] == [
        "global_average_pooling2d_12",
        "dropout_12",
        "dense_12",
    ]
    # The target is the base's output: no layer of the base runs, not even the first pass.
    assert base.head == () and base.tail == () and not base.uses_inputs
    tail13 = make_tail(model, _find(model, "xception", "block13_sepconv2_act"))
    assert tail13.levels is not None
    names = [n.operation.name for n in tail13.levels[1].tail]
    assert names[0] == "block13_sepconv2" and "block14_sepconv2_act" in names
    assert "block13_sepconv1" not in names and "conv2d_3" not in names


def test_subclassed_model_falls_back() -> None:
    model = _model(_subclassed)
    tail = make_tail(model, model.conv1)
    assert not tail.exact_tail_only
    image = _image(10)
    true = model.conv1(image)
    _close(tail(image, true), model(image, training=False))
    replacements = ops.convert_to_tensor(np.zeros((3, 10, 10, 4), dtype="float32"))
    zero_act = model.dense(model.gap(model.conv2(replacements) + replacements))
    _close(tail(image, replacements), zero_act)
    assert "call" not in vars(model.conv1)


def test_shared_layer_falls_back_and_refuses() -> None:
    keras.utils.set_random_seed(5)
    shared = layers.Conv2D(3, 3, padding="same", name="shared")
    inputs = keras.Input((8, 8, 3))
    outputs = layers.GlobalAveragePooling2D()(shared(shared(inputs)))
    model = keras.Model(inputs, outputs)
    tail = make_tail(model, shared)
    assert not tail.exact_tail_only
    with pytest.raises(LayerError, match="more than once"):
        tail(_image(8), ops.convert_to_tensor(np.zeros((2, 8, 8, 3), dtype="float32")))


def test_bad_arguments() -> None:
    model = _model(_resnet_model)
    with pytest.raises(LayerNotFoundError, match="not part of model"):
        make_tail(model, layers.ReLU(name="stranger"))
    tail = make_tail(model, model.get_layer("stem_relu"))
    two = ops.concatenate([_image(24), _image(24, seed=1)], axis=0)
    with pytest.raises(BadInputError, match="one image at a time"):
        tail(two, ops.convert_to_tensor(np.zeros((2, 24, 24, 8), dtype="float32")))


@pytest.mark.parametrize("case", ["seed_block13", "resnet_res1"])
def test_model_is_unchanged(case: str) -> None:
    factory, size, path, _ = CASES[case]
    model = _model(factory)
    layer = _find(model, *path)
    weights = [w.copy() for w in model.get_weights()]
    every = list(model._flatten_layers(include_self=True))
    attrs = {id(item): set(vars(item)) for item in every}
    tail = make_tail(model, layer)
    shape = (4, *(int(d) for d in layer.output.shape[1:]))
    tail(_image(size), ops.convert_to_tensor(np.ones(shape, dtype="float32")))
    Tail(model, layer, None)(_image(size), ops.convert_to_tensor(np.ones(shape, dtype="float32")))
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    assert list(model._flatten_layers(include_self=True)) == every
    for item in every:
        assert set(vars(item)) == attrs[id(item)], item.name


@pytest.mark.skipif(BACKEND != "torch", reason="gradient recording is a torch matter")
def test_no_autograd_graph_under_torch() -> None:
    model = _model(_resnet_model)
    layer = model.get_layer("res1_relu1")
    replacements = ops.convert_to_tensor(np.ones((2, 24, 24, 8), dtype="float32"))
    for tail in (make_tail(model, layer), Tail(model, layer, None)):
        out = tail(_image(24), replacements)
        assert not out.requires_grad and out.grad_fn is None
