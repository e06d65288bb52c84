"""Keras models with several inputs, and label tensors of every framework as targets.

Runs under each Keras backend (the Makefile's KERAS_TESTS): a functional two-input model
(image + side vector, fused before the head), the twin of ``nets.ImageAndMeta`` with its
weights, gives the torch model's maps for list and dict inputs; the torch model's maps are
checked against the formulas in tests/backends/torch/test_multi_input.py.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
from keras import layers  # noqa: E402

import camlens  # noqa: E402
from nets import ImageAndMeta  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::camlens.MapStrengthWarning")


def keras_twin(net: ImageAndMeta, *, as_dict: bool) -> keras.Model:
    """The same network in Keras (channels-last), inputs a list or a dict, torch's weights."""
    image = keras.Input((8, 8, 3), name="image")
    meta = keras.Input((2,), name="meta")
    conv = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")
    side = layers.Dense(4, activation="tanh", name="side")
    head = layers.Dense(3, name="head")
    pooled = layers.GlobalAveragePooling2D()(conv(image))
    out = head(layers.Multiply()([pooled, side(meta)]))
    model = keras.Model({"image": image, "meta": meta} if as_dict else [image, meta], out)
    conv.set_weights(
        [net.conv.weight.detach().numpy().transpose(2, 3, 1, 0), net.conv.bias.detach().numpy()]
    )
    side.set_weights([net.side.weight.detach().numpy().T, net.side.bias.detach().numpy()])
    head.set_weights([net.head.weight.detach().numpy().T, net.head.bias.detach().numpy()])
    return model


@pytest.fixture(scope="module")
def net() -> ImageAndMeta:
    return ImageAndMeta().eval()


@pytest.fixture(scope="module")
def twins(net: ImageAndMeta) -> dict[str, keras.Model]:
    return {"list": keras_twin(net, as_dict=False), "dict": keras_twin(net, as_dict=True)}


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    return rng.normal(size=(3, 3, 8, 8)).astype("float32"), rng.normal(size=(3, 2)).astype(
        "float32"
    )


def _keras_inputs(kind: str, x: np.ndarray, meta: np.ndarray) -> object:
    image = x.transpose(0, 2, 3, 1)
    return {"meta": meta, "image": image} if kind == "dict" else [image, meta]


def test_the_twins_compute_the_same_function(net, twins, batch) -> None:  # type: ignore[no-untyped-def]
    x, meta = batch
    with torch.no_grad():
        expected = net(torch.from_numpy(x), torch.from_numpy(meta)).numpy()
    for kind, model in twins.items():
        got = keras.ops.convert_to_numpy(model(_keras_inputs(kind, x, meta)))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize(
    ("method", "layer"),
    [
        ("gradcam", "conv"),
        ("gradcam++", "conv"),
        ("scorecam", "conv"),
        ("ablationcam", "conv"),
        ("saliency", None),
        ("guidedgradcam", "conv"),
    ],
)
def test_torch_and_keras_give_the_same_maps(net, twins, batch, kind, method, layer) -> None:  # type: ignore[no-untyped-def]
    """Same weights, same maps: the image explained, the side input passed to the model."""
    x, meta = batch
    target = [0, 2, 1]
    t = camlens.explain(
        net,
        (torch.from_numpy(x), torch.from_numpy(meta)),
        method=method,
        layer=None if layer is None else "relu",
        target=target,
    )
    k = camlens.explain(
        twins[kind], _keras_inputs(kind, x, meta), method=method, layer=layer, target=target
    )
    scale = np.abs(t.raw).max()
    assert scale > 0
    np.testing.assert_allclose(k.raw, t.raw, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(k.maps, t.maps, atol=1e-4)
    np.testing.assert_allclose(k.scores, t.scores, rtol=1e-5, atol=1e-6)


def test_a_batch_equals_its_single_calls_and_the_image_is_found_or_named(twins, batch) -> None:  # type: ignore[no-untyped-def]
    x, meta = batch
    model = twins["dict"]
    inputs = _keras_inputs("dict", x, meta)
    for method in ("gradcam", "scorecam"):
        cam = camlens.Explainer(model, "conv", method=method, input="image")
        whole = cam(inputs, target=[1, 0, 2])
        for n, c in enumerate([1, 0, 2]):
            one = cam({k: v[n : n + 1] for k, v in inputs.items()}, target=c)
            np.testing.assert_allclose(whole.raw[n], one.raw[0], rtol=1e-5, atol=1e-6)
        found = camlens.Explainer(model, "conv", method=method)(inputs, target=[1, 0, 2])
        np.testing.assert_array_equal(found.raw, whole.raw)
    listed = twins["list"]
    by_index = camlens.GradCAM(listed, "conv", input=0)(_keras_inputs("list", x, meta))
    np.testing.assert_allclose(
        by_index.raw, camlens.GradCAM(model, "conv")(inputs).raw, rtol=1e-6, atol=1e-7
    )


def test_keras_inputs_that_do_not_say_which_is_the_image_raise(twins, batch) -> None:  # type: ignore[no-untyped-def]
    x, meta = batch
    image = x.transpose(0, 2, 3, 1)
    cam = camlens.GradCAM(twins["list"], "conv")
    with pytest.raises(camlens.BadInputError, match=r"2 are a 4-D image batch: pass input="):
        cam([image, image])
    with pytest.raises(camlens.BadInputError, match=r"batch size 1.*one row per image"):
        cam([image, meta[:1]])
    with pytest.raises(camlens.BadInputError, match=r"input='img' is not a key"):
        camlens.GradCAM(twins["dict"], "conv", input="img")({"image": image, "meta": meta})
    # The explained image is checked against its own model input.
    with pytest.raises(camlens.BadInputError, match=r"do not fit the model's input"):
        camlens.GradCAM(twins["dict"], "conv")({"image": image[:, :6], "meta": meta})


def _label_arrays(labels: list[int]) -> dict[str, object]:
    """The same labels as a torch tensor, a NumPy array, a TensorFlow tensor, a JAX array."""
    tf = pytest.importorskip("tensorflow")
    jnp = pytest.importorskip("jax.numpy")
    return {
        "torch": torch.tensor(labels),
        "numpy": np.array(labels),
        "tensorflow": tf.constant(labels),
        "jax": jnp.asarray(labels),
    }


def test_label_tensors_of_every_framework_are_one_class_per_image(net, twins, batch) -> None:  # type: ignore[no-untyped-def]
    """``for x, y in loader: cam(x, target=y)`` whatever library the labels come from, for the
    torch model and its Keras twin alike."""
    x, meta = batch
    labels = [2, 0, 1]
    cases = [
        (camlens.GradCAM(net, "relu"), (torch.from_numpy(x), torch.from_numpy(meta))),
        (camlens.GradCAM(twins["list"], "conv"), _keras_inputs("list", x, meta)),
    ]
    for cam, inputs in cases:
        expected = cam(inputs, target=labels)
        assert expected.units.tolist() == labels
        for kind, y in _label_arrays(labels).items():
            got = cam(inputs, target=y)
            assert got.units.tolist() == labels, kind
            np.testing.assert_array_equal(got.raw, expected.raw)


class Subclassed(keras.Model):
    """The twin as a subclassed model (no graph): ``call`` unpacks a dict of inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")
        self.pool = layers.GlobalAveragePooling2D()
        self.side = layers.Dense(4, activation="tanh")
        self.head = layers.Dense(3)

    def call(self, inputs: dict) -> object:
        pooled = self.pool(self.conv(inputs["image"]))
        return self.head(pooled * self.side(inputs["meta"]))


def test_a_subclassed_model_takes_its_inputs_as_one_structure(twins, batch) -> None:  # type: ignore[no-untyped-def]
    x, meta = batch
    inputs = _keras_inputs("dict", x, meta)
    model = Subclassed()
    model(inputs)
    for ours, name in ((model.conv, "conv"), (model.side, "side"), (model.head, "head")):
        ours.set_weights(twins["dict"].get_layer(name).get_weights())
    for method in ("gradcam", "scorecam", "saliency"):
        layer = None if method == "saliency" else "conv"
        got = camlens.explain(model, inputs, method=method, layer=layer, target=[0, 2, 1])
        want = camlens.explain(twins["dict"], inputs, method=method, layer=layer, target=[0, 2, 1])
        np.testing.assert_allclose(got.raw, want.raw, rtol=1e-5, atol=1e-6)
