"""The Keras backend, on whichever Keras backend runs (CI runs this file under all three)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers, ops  # noqa: E402

import camlens  # noqa: E402

BACKEND = keras.backend.backend()


def _seed_model(size: int = 71) -> keras.Model:
    """The seed's shape: Input -> Xception base ("xception") -> GAP -> Dropout -> Dense(1)."""
    keras.utils.set_random_seed(0)
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(size, size, 3))
    inputs = keras.Input((size, size, 3))
    x = base(inputs)
    x = layers.GlobalAveragePooling2D(name="global_average_pooling2d_12")(x)
    x = layers.Dropout(0.5, name="dropout_12")(x)
    outputs = layers.Dense(1, name="dense_12")(x)
    return keras.Model(inputs, outputs, name="age_regressor")


@pytest.fixture(scope="module")
def seed_model() -> keras.Model:
    return _seed_model()


@pytest.fixture(scope="module")
def seed_batch() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, size=(2, 71, 71, 3)).astype("float32")


def _grad_wrt(fn, a):  # type: ignore[no-untyped-def]
    """d sum(fn(a)) / da with the active backend's own autodiff (written apart from camlens)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        a = tf.convert_to_tensor(a)
        with tf.GradientTape() as tape:
            tape.watch(a)
            y = tf.reduce_sum(fn(a))
        return tape.gradient(y, a).numpy()
    if BACKEND == "jax":
        import jax

        return np.asarray(jax.grad(lambda t: fn(t).sum())(a))
    import torch

    t = torch.tensor(a, requires_grad=True)
    fn(t).sum().backward()
    return t.grad.numpy()


def test_seed_recipe_parity(seed_model: keras.Model, seed_batch: np.ndarray) -> None:
    """The seed's hand-written Grad-CAM, rebuilt independently, equals camlens to 1e-5."""
    base = seed_model.get_layer("xception")
    last_conv = base.get_layer("block14_sepconv2_act")
    intermediate = keras.Model(base.input, last_conv.output)
    gap = seed_model.get_layer("global_average_pooling2d_12")
    drop = seed_model.get_layer("dropout_12")
    dense = seed_model.get_layer("dense_12")
    cam = camlens.GradCAM(seed_model, layer="block14_sepconv2_act")
    exp = cam(seed_batch, target=camlens.Output(0))
    assert exp.layers == ("xception/block14_sepconv2_act",)
    for i in range(len(seed_batch)):
        img = seed_batch[i : i + 1]
        feats = ops.convert_to_numpy(intermediate(img, training=False))
        head = lambda a: dense(drop(gap(a), training=False))[:, 0]  # noqa: E731
        grads = _grad_wrt(head, feats)
        pooled = grads.mean(axis=(0, 1, 2))
        heatmap = feats[0] @ pooled
        np.testing.assert_allclose(exp.raw[i], heatmap, rtol=1e-5, atol=1e-5 * abs(heatmap).max())
        relu = np.maximum(heatmap, 0)
        assert relu.max() > 0
        ours = np.maximum(exp.raw[i], 0) / np.maximum(exp.raw[i], 0).max()
        np.testing.assert_allclose(ours, relu / relu.max(), atol=1e-5)
        pred = ops.convert_to_numpy(seed_model(img, training=False))[0, 0]
        assert exp.scores[i] == pytest.approx(pred, rel=1e-5, abs=1e-6)
    assert exp.maps.shape == (2, 71, 71) and exp.score_kind == "model output"


def test_bare_name_and_path_agree(seed_model: keras.Model, seed_batch: np.ndarray) -> None:
    bare = camlens.explain(
        seed_model, seed_batch, layer="block13_sepconv2_act", target=camlens.Output(0)
    )
    path = camlens.explain(
        seed_model, seed_batch, layer="xception/block13_sepconv2_act", target=camlens.Output(0)
    )
    obj = camlens.explain(
        seed_model,
        seed_batch,
        layer=seed_model.get_layer("xception").get_layer("block13_sepconv2_act"),
        target=camlens.Output(0),
    )
    np.testing.assert_array_equal(bare.maps, path.maps)
    np.testing.assert_array_equal(bare.maps, obj.maps)


def test_sign_down_negates_the_signed_map(seed_model: keras.Model, seed_batch: np.ndarray) -> None:
    up = camlens.explain(
        seed_model, seed_batch, layer="block14_sepconv2_act", target=camlens.Output(0), relu=False
    )
    down = camlens.explain(
        seed_model,
        seed_batch,
        layer="block14_sepconv2_act",
        target=camlens.Output(0, sign=-1),
        relu=False,
    )
    np.testing.assert_allclose(down.raw, -up.raw, atol=1e-6)


def test_auto_layer_is_the_nested_base(seed_model: keras.Model, seed_batch: np.ndarray) -> None:
    cam = camlens.GradCAM(seed_model)
    exp = cam(seed_batch, target=camlens.Output(0))
    assert cam.layers == ("xception",)
    explicit = camlens.explain(
        seed_model, seed_batch, layer="block14_sepconv2_act", target=camlens.Output(0)
    )
    np.testing.assert_allclose(exp.maps, explicit.maps, atol=1e-6)


def test_model_is_not_mutated(seed_model: keras.Model, seed_batch: np.ndarray) -> None:
    weights = [w.copy() for w in seed_model.get_weights()]
    all_layers = list(seed_model._flatten_layers(include_self=True))
    attrs = {id(layer): dict(vars(layer)) for layer in all_layers}
    activations = {id(layer): getattr(layer, "activation", None) for layer in all_layers}
    camlens.GradCAMPlusPlus(seed_model, "block14_sepconv1_act")(seed_batch, camlens.Output(0))
    for before, after in zip(weights, seed_model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    for layer in seed_model._flatten_layers(include_self=True):
        assert set(vars(layer)) == set(attrs[id(layer)]), layer.name
        assert getattr(layer, "activation", None) is activations[id(layer)]
        assert "call" not in vars(layer)


def test_repeated_calls_reuse_the_compiled_function(
    seed_model: keras.Model, seed_batch: np.ndarray
) -> None:
    cam = camlens.GradCAM(seed_model, "block14_sepconv2_act")
    prober = cam._backend._prober  # shared by every backend of this model (other tests too)
    before = prober.traces
    first = cam(seed_batch, target=camlens.Output(0))
    compiled = prober.traces
    second = cam(seed_batch, target=camlens.Output(0))
    np.testing.assert_array_equal(first.maps, second.maps)  # dropout off: deterministic
    assert compiled - before <= 1 and prober.traces == compiled  # one probe, compiled once


def test_batch_equals_single_calls_and_topk(seed_batch: np.ndarray) -> None:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((20, 20, 3))
    x = layers.Conv2D(8, 3, activation="relu", name="conv_a")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Conv2D(8, 3, activation="relu", name="conv_b")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(4, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs)
    batch = np.random.default_rng(1).normal(size=(3, 20, 20, 3)).astype("float32")
    cam = camlens.LayerCAM(model, "conv_b")
    top = cam(batch, target=camlens.TopK(2))
    logits = keras.Model(inputs, model.get_layer("probs").input)  # for the true logits only
    z = (
        ops.convert_to_numpy(logits(batch)) @ model.get_layer("probs").kernel.numpy()
        + model.get_layer("probs").bias.numpy()
    )
    order = np.argsort(-z, axis=1)[:, :2]
    np.testing.assert_array_equal(top.units.reshape(3, 2), order)
    np.testing.assert_allclose(top.scores.reshape(3, 2), np.take_along_axis(z, order, 1), rtol=1e-5)
    assert top.score_kind == "pre-softmax logit"
    assert top.outputs is not None
    np.testing.assert_allclose(top.outputs, z, rtol=1e-5, atol=1e-6)  # the logits, per image
    for i in range(3):
        for j in range(2):
            single = cam(batch[i : i + 1], target=int(order[i, j]))
            np.testing.assert_allclose(top.maps[2 * i + j], single.maps[0], atol=1e-5)
    probs = camlens.LayerCAM(model, "conv_b", logits=False)(batch, target=camlens.TopK(1))
    assert probs.score_kind == "softmax probability"
    p = ops.convert_to_numpy(model(batch))
    np.testing.assert_allclose(probs.scores, p.max(axis=1), rtol=1e-5)
    np.testing.assert_allclose(probs.outputs, p, rtol=1e-5, atol=1e-7)


def test_sequential_and_subclassed_models() -> None:
    keras.utils.set_random_seed(2)
    seq = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            layers.Conv2D(4, 3, activation="relu", name="conv"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(2, name="out"),
        ]
    )

    class Sub(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="sub")
            self.conv = layers.Conv2D(4, 3, activation="relu", name="conv")
            self.pool = layers.GlobalAveragePooling2D()
            self.out = layers.Dense(2, name="out")

        def call(self, x, training=None):  # type: ignore[no-untyped-def]
            return self.out(self.pool(self.conv(x)))

    sub = Sub()
    batch = np.random.default_rng(2).normal(size=(2, 12, 12, 3)).astype("float32")
    sub(batch)
    sub.conv.set_weights(seq.get_layer("conv").get_weights())
    sub.out.set_weights(seq.get_layer("out").get_weights())
    a = camlens.explain(seq, batch, layer="conv", target=1)
    b = camlens.explain(sub, batch, layer="conv", target=1)
    np.testing.assert_allclose(a.maps, b.maps, atol=1e-6)
    assert "call" not in vars(sub.conv)
    assert camlens.GradCAM(sub)(batch).layers == ("conv",)


def test_bad_inputs_and_layers(seed_model: keras.Model, seed_batch: np.ndarray) -> None:
    with pytest.raises(
        camlens.LayerNotFoundError, match="did you mean 'xception/block14_sepconv2_act'"
    ):
        camlens.GradCAM(seed_model, "block14_sepconv2_actv")
    with pytest.raises(camlens.LayerError, match="no spatial"):
        camlens.explain(seed_model, seed_batch, layer="dense_12", target=camlens.Output(0))
    with pytest.raises(camlens.BadInputError, match=r"do not fit the model's input"):
        camlens.explain(seed_model, seed_batch[:, :64, :64], target=camlens.Output(0))
    with pytest.raises(camlens.BadInputError, match="no batch axis"):
        camlens.explain(seed_model, seed_batch[0], target=camlens.Output(0))
    with pytest.raises(camlens.BadTargetError, match="output 3 is out of range"):
        camlens.explain(seed_model, seed_batch, target=camlens.Output(3))
    unbuilt = keras.Sequential([layers.Conv2D(2, 3), layers.Flatten(), layers.Dense(2)])
    with pytest.raises(camlens.UnsupportedModelError, match="not built"):
        camlens.GradCAM(unbuilt)


def test_ambiguous_name_lists_the_paths() -> None:
    def block(name: str) -> keras.Model:
        i = keras.Input((8, 8, 3))
        return keras.Model(i, layers.Conv2D(3, 3, padding="same", name="conv")(i), name=name)

    inputs = keras.Input((8, 8, 3))
    x = block("left")(inputs)
    x = block("right")(x)
    model = keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(camlens.LayerNotFoundError, match=r"ambiguous.*'left/conv', 'right/conv'"):
        camlens.GradCAM(model, "conv")
    assert camlens.GradCAM(model, "right/conv").layers == ("right/conv",)
