"""FullGrad on Keras: the same maps as on PyTorch for the same weights, batch norm included,
and the decomposition complete on Keras's own layers (runs under each Keras backend)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
from keras import layers  # noqa: E402
from torch import nn  # noqa: E402

import camlens  # noqa: E402
from camlens.backends.base import INPUT  # noqa: E402
from camlens.backends.keras import KerasBackend  # noqa: E402


def _torch_net() -> nn.Sequential:
    """conv + BN (eval, non-trivial running stats) + ReLU + max-pool + conv + ReLU, GAP, linear."""
    torch.manual_seed(11)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    )
    with torch.no_grad():
        bn = net[1]
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.3, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return net.eval()


def _twin(net: nn.Sequential, size: tuple[int, int]) -> keras.Model:
    """The same network in Keras, channels-last, ending in a softmax Dense (read as logits)."""
    conv1, bn, _, _, conv2, _, _, _, fc = net
    inputs = keras.Input((*size, 3))
    k1 = layers.Conv2D(4, 3, padding="same")
    kbn = layers.BatchNormalization(epsilon=bn.eps)
    k2 = layers.Conv2D(5, 3, padding="same", activation="relu")
    dense = layers.Dense(3, activation="softmax")
    x = layers.MaxPooling2D(2)(layers.ReLU()(kbn(k1(inputs))))
    model = keras.Model(inputs, dense(layers.GlobalAveragePooling2D()(k2(x))))
    for k, t in ((k1, conv1), (k2, conv2)):
        k.set_weights([t.weight.detach().numpy().transpose(2, 3, 1, 0), t.bias.detach().numpy()])
    kbn.set_weights(
        [v.detach().numpy() for v in (bn.weight, bn.bias, bn.running_mean, bn.running_var)]
    )
    dense.set_weights([fc.weight.detach().numpy().T, fc.bias.detach().numpy()])
    return model


@pytest.fixture(scope="module")
def twins() -> tuple[nn.Sequential, keras.Model]:
    net = _torch_net()
    return net, _twin(net, (8, 8))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(12).normal(size=(2, 3, 8, 8)).astype("float32")


def _decomposed(
    model: keras.Model, images: np.ndarray, target: camlens.Target
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Return the names of the feature-map layers with a bias, each row's summed terms of the
    full-gradient decomposition, and the rows' scores."""
    backend = KerasBackend(model)
    x = backend.prepare(images.transpose(0, 2, 3, 1))
    probe = backend.probe(x, [INPUT], target, gradients=True, biases=True)
    assert probe.biases is not None and probe.gradients is not None
    a = np.asarray(backend.to_numpy(probe.activations[0]), dtype=np.float64)
    g = np.asarray(backend.to_numpy(probe.gradients[0]), dtype=np.float64)
    total = (a * g).sum(axis=(1, 2, 3)) + probe.biases.rest
    for m in probe.biases.maps:
        total += np.asarray(backend.to_numpy(m), dtype=np.float64).sum(axis=(1, 2, 3))
    return list(probe.biases.layers), total, probe.resolved.values.reshape(-1)


def test_torch_and_keras_give_the_same_fullgrad_maps(
    twins: tuple[nn.Sequential, keras.Model], images: np.ndarray
) -> None:
    net, model = twins
    t = camlens.FullGrad(net)(images, target=[2, 0])
    k = camlens.FullGrad(model)(images.transpose(0, 2, 3, 1), target=[2, 0])
    np.testing.assert_allclose(k.scores, t.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(k.raw, t.raw, rtol=0, atol=1e-5 * np.abs(t.raw).max())
    np.testing.assert_allclose(k.maps, t.maps, atol=1e-5)


def test_keras_decomposition_is_complete_and_names_the_same_layers(
    twins: tuple[nn.Sequential, keras.Model], images: np.ndarray
) -> None:
    _, model = twins
    names, total, scores = _decomposed(model, images, camlens.TopK(2))
    assert [n.split("_")[0] for n in names] == ["conv2d", "batch", "conv2d"]
    # The softmax Dense is read before its softmax: its bias term is in ``rest``.
    np.testing.assert_allclose(total, scores, rtol=1e-5, atol=1e-6)


def test_an_activation_whose_gradient_cannot_be_read_is_refused(images: np.ndarray) -> None:
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="gelu", name="fused")(inputs)
    model = keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(camlens.MethodError, match="'fused' fuses the activation"):
        camlens.explain(model, images.transpose(0, 2, 3, 1), method="fullgrad")


class SubclassedNet(keras.Model):
    """conv + BN + ReLU (a function call) + mean + Dense, without a functional graph."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = layers.Conv2D(4, 3, padding="same")
        self.norm = layers.BatchNormalization()
        self.dense = layers.Dense(3)

    def call(self, x: object, training: bool = False) -> object:
        h = keras.ops.relu(self.norm(self.conv(x), training=training))
        return self.dense(keras.ops.mean(h, axis=(1, 2)))


def _subclassed() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = SubclassedNet()
    model(np.zeros((1, 8, 8, 3), "float32"))
    model.norm.moving_mean.assign(np.linspace(-1.0, 1.0, 4).astype("float32"))
    model.norm.moving_variance.assign(np.linspace(0.5, 2.0, 4).astype("float32"))
    return model


def _nested() -> keras.Model:
    keras.utils.set_random_seed(1)
    inner = keras.Sequential(
        [keras.Input((8, 8, 3)), layers.Conv2D(3, 3, padding="same", activation="relu")],
        name="inner",
    )
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, activation="relu", name="outer_conv")(inner(inputs))
    return keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))


@pytest.mark.parametrize(
    ("make", "layers_found"),
    [(_subclassed, ("conv2d", "batch_normalization")), (_nested, ("inner/", "outer_conv"))],
    ids=["subclassed", "nested"],
)
def test_the_decomposition_is_complete_on_subclassed_and_nested_models(
    make: object, layers_found: tuple[str, ...], images: np.ndarray
) -> None:
    names, total, scores = _decomposed(make(), images, camlens.Class(1))  # type: ignore[operator]
    assert len(names) == 2
    for name, start in zip(names, layers_found, strict=True):
        assert name.startswith(start), name
    np.testing.assert_allclose(total, scores, rtol=1e-5, atol=1e-6)
