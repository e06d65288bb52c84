"""Every gradient method gives the same maps on PyTorch and on Keras for the same weights.

Runs under each Keras backend (the Makefile's KERAS_TESTS): a small torch network and its Keras
twin, weights copied from torch to Keras (convolution kernels to HWIO, linear layers
transposed), explained at the same layer with the same target.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

#: Recipro-CAM's raw maps are class probabilities per masked location: on these tiny random
#: networks they are near-flat by nature (and min-max shows them stretched, which camlens
#: warns about). These tests check the maths; map strength is tested in test_strength.py.
pytestmark = pytest.mark.filterwarnings("ignore::camlens.MapStrengthWarning")
from keras import layers  # noqa: E402
from torch import nn  # noqa: E402

import camlens  # noqa: E402

#: Methods that read attention maps: tested on Keras models in test_keras_attention.py.
ATTENTION = {
    cls.name for cls in camlens.methods.REGISTRY.values() if getattr(cls, "reads_attention", False)
}
GRADIENT_METHODS = sorted(
    {
        cls.name
        for cls in camlens.methods.REGISTRY.values()
        if not issubclass(cls, camlens.methods.PerturbationMethod)
    }
    - ATTENTION
)
#: Methods defined only where a global average pool reads the layer.
NEEDS_POOLED_LAYER = {"cam"}
#: Methods that explain the input's pixels (no layer): the input gradients must agree too, and
#: guided backprop's guided ReLUs (torch ReLU modules, Keras relu activations) as well.
PIXEL_LEVEL = {
    cls.name for cls in camlens.methods.REGISTRY.values() if getattr(cls, "pixel_level", False)
}


class TorchNet(nn.Module):
    """Two 3x3 convolutions (the "trunk"), an optional 1x1 conv + tanh, GAP, linear."""

    def __init__(self, linear_head: bool) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()
        )
        self.post = nn.Identity() if linear_head else nn.Sequential(nn.Conv2d(8, 4, 1), nn.Tanh())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 if linear_head else 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.post(self.trunk(x))), 1))


def _conv(module: nn.Conv2d, **kwargs: object) -> layers.Conv2D:
    return layers.Conv2D(module.out_channels, module.kernel_size, padding="same", **kwargs)


def keras_twin(net: TorchNet, size: tuple[int, int]) -> keras.Model:
    """The same network in Keras (channels-last), with the torch weights."""
    c1, c2 = net.trunk[0], net.trunk[2]
    inputs = keras.Input((*size, 3))
    k1 = _conv(c1, activation="relu", name="c1")
    k2 = _conv(c2, activation="relu", name="trunk")
    x = k2(k1(inputs))
    pairs = [(k1, c1), (k2, c2)]
    if isinstance(net.post, nn.Sequential):
        k3 = _conv(net.post[0], activation="tanh")
        x = k3(x)
        pairs.append((k3, net.post[0]))
    x = layers.GlobalAveragePooling2D()(x)
    dense = layers.Dense(net.fc.out_features)
    model = keras.Model(inputs, dense(x))
    for k, t in pairs:
        k.set_weights([t.weight.detach().numpy().transpose(2, 3, 1, 0), t.bias.detach().numpy()])
    dense.set_weights([net.fc.weight.detach().numpy().T, net.fc.bias.detach().numpy()])
    return model


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(6).normal(size=(2, 3, 10, 12)).astype("float32")


@pytest.fixture(scope="module", params=[True, False], ids=["linear-head", "conv-head"])
def twins(request: pytest.FixtureRequest) -> tuple[TorchNet, keras.Model, bool]:
    net = TorchNet(linear_head=request.param).eval()
    return net, keras_twin(net, (10, 12)), request.param


def test_the_twins_compute_the_same_function(
    twins: tuple[TorchNet, keras.Model, bool], images: np.ndarray
) -> None:
    net, model, _ = twins
    with torch.no_grad():
        expected = net(torch.from_numpy(images)).numpy()
    got = keras.ops.convert_to_numpy(model(images.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_torch_and_keras_give_the_same_maps(
    method: str, twins: tuple[TorchNet, keras.Model, bool], images: np.ndarray
) -> None:
    net, model, linear_head = twins
    keras_images = images.transpose(0, 2, 3, 1)
    target = [1, 3]
    if method in NEEDS_POOLED_LAYER and not linear_head:
        for m, x in ((net, images), (model, keras_images)):
            with pytest.raises(camlens.MethodError):
                camlens.explain(m, x, method=method, layer="trunk", target=target)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", camlens.CamlensWarning)
        layer = None if method in PIXEL_LEVEL else "trunk"
        t = camlens.explain(net, images, method=method, layer=layer, target=target)
        k = camlens.explain(model, keras_images, method=method, layer=layer, target=target)
    scale = np.abs(t.raw).max()
    assert scale > 0
    np.testing.assert_allclose(k.raw, t.raw, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(k.maps, t.maps, atol=1e-4)
    np.testing.assert_allclose(k.scores, t.scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "cam"])
def test_eigen_smooth_gives_the_same_maps(
    method: str, twins: tuple[TorchNet, keras.Model, bool], images: np.ndarray
) -> None:
    net, model, linear_head = twins
    if method in NEEDS_POOLED_LAYER and not linear_head:
        return
    options = {"method": method, "layer": "trunk", "target": 2, "eigen_smooth": True}
    t = camlens.explain(net, images, **options)
    k = camlens.explain(model, images.transpose(0, 2, 3, 1), **options)
    np.testing.assert_allclose(k.raw, t.raw, rtol=1e-4, atol=1e-5 * np.abs(t.raw).max())


@pytest.mark.parametrize("gaussian", [False, True])
def test_reciprocam_gives_the_same_maps(
    gaussian: bool, twins: tuple[TorchNet, keras.Model, bool], images: np.ndarray
) -> None:
    # Gradient-free, through each backend's tail: the layer's output replaced per location.
    net, model, _ = twins
    options = {"method": "reciprocam", "layer": "trunk", "target": [0, 4], "gaussian": gaussian}
    t = camlens.explain(net, images, **options)
    k = camlens.explain(model, images.transpose(0, 2, 3, 1), **options)
    np.testing.assert_allclose(k.raw, t.raw, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["gradcam", "smoothgradcam++", "reciprocam"])
def test_aug_smooth_gives_the_same_maps(
    method: str, twins: tuple[TorchNet, keras.Model, bool], images: np.ndarray
) -> None:
    net, model, _ = twins
    options = {"method": method, "layer": "trunk", "aug_smooth": True}
    t = camlens.explain(net, images, **options)
    k = camlens.explain(model, images.transpose(0, 2, 3, 1), **options)
    np.testing.assert_array_equal(k.units, t.units)
    np.testing.assert_allclose(k.raw, t.raw, rtol=1e-4, atol=1e-5 * np.abs(t.raw).max())
    # Recipro-CAM's raw maps are probabilities near 0.29 spanning ~2e-4 on the conv head: min-max
    # scaling turns their float32 rounding (~3e-8) into ~2e-4 in the maps.
    np.testing.assert_allclose(k.maps, t.maps, atol=1e-3 if method == "reciprocam" else 1e-4)


def test_factorize_gives_the_same_concepts(
    twins: tuple[TorchNet, keras.Model, bool], images: np.ndarray
) -> None:
    net, model, _ = twins
    t = camlens.factorize(net, images, k=3, layer="trunk", iterations=30)
    k = camlens.factorize(model, images.transpose(0, 2, 3, 1), k=3, layer="trunk", iterations=30)
    np.testing.assert_allclose(k.concepts, t.concepts, rtol=1e-3, atol=1e-5 * t.concepts.max())
    np.testing.assert_allclose(k.raw, t.raw, rtol=1e-3, atol=1e-5 * t.raw.max())
    assert k.scores is not None and t.scores is not None
    np.testing.assert_allclose(k.scores, t.scores, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("method", ["refinecam", "polycam"])
def test_a_multi_layer_method_at_two_layers_gives_the_same_maps(
    method: str, twins: tuple[TorchNet, keras.Model, bool], images: np.ndarray
) -> None:
    net, model, _ = twins
    t = camlens.explain(net, images, method=method, layer=["trunk.1", "trunk"], target=1)
    k = camlens.explain(
        model, images.transpose(0, 2, 3, 1), method=method, layer=["c1", "trunk"], target=1
    )
    np.testing.assert_allclose(k.maps, t.maps, atol=1e-4)
    np.testing.assert_allclose(k.raw, t.raw, rtol=1e-4, atol=1e-5 * np.abs(t.raw).max())


def test_layers_given_out_of_their_running_order_give_the_same_maps(
    twins: tuple[TorchNet, keras.Model, bool], images: np.ndarray
) -> None:
    """The deeper layer first: each layer's tap is matched to its layer, not to its turn."""
    net, model, _ = twins
    t = camlens.explain(net, images, method="gradcam", layer=["trunk", "trunk.1"], target=1)
    k = camlens.explain(
        model, images.transpose(0, 2, 3, 1), method="gradcam", layer=["trunk", "c1"], target=1
    )
    np.testing.assert_allclose(k.raw, t.raw, rtol=1e-4, atol=1e-5 * np.abs(t.raw).max())


ALL_METHODS = sorted({cls.name for cls in camlens.methods.REGISTRY.values()} - ATTENTION)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_leaves_the_keras_model_as_found(method: str, images: np.ndarray) -> None:
    net = TorchNet(linear_head=True).eval()
    model = keras_twin(net, (10, 12))
    model.layers[1].trainable = False  # a frozen layer must stay frozen
    weights = [w.copy() for w in model.get_weights()]
    flags = [layer.trainable for layer in model.layers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", camlens.CamlensWarning)
        layer = None if method in PIXEL_LEVEL else "trunk"
        camlens.explain(model, images.transpose(0, 2, 3, 1), method=method, layer=layer)
    assert [layer.trainable for layer in model.layers] == flags
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("layer", ["trunk", "two-layers"])
def test_shapleycam_through_a_softmax_gives_the_same_maps(
    layer: str, twins: tuple[TorchNet, keras.Model, bool], images: np.ndarray
) -> None:
    # The probability is curved in the layer's output, so H A is not zero: each backend's
    # second backward pass (nested tape, jvp of the vjp, double backward) must agree.
    net, model, _ = twins
    probabilities = nn.Sequential(net, nn.Softmax(dim=-1)).eval()
    keras_probabilities = keras.Model(model.inputs, layers.Softmax()(model.outputs[0]))
    torch_layers, keras_layers = (
        (["0.trunk"], ["trunk"])
        if layer == "trunk"
        else (["0.trunk.1", "0.trunk"], ["c1", "trunk"])
    )
    options = {"method": "shapleycam", "target": [[1, 3], [0, 1]], "relu": False}
    t = camlens.explain(probabilities, images, layer=torch_layers, **options)
    k = camlens.explain(
        keras_probabilities,
        images.transpose(0, 2, 3, 1),
        layer=keras_layers,
        logits=False,
        **options,
    )
    assert k.score_kind == "softmax probability"
    np.testing.assert_allclose(k.scores, t.scores, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(k.raw, t.raw, rtol=1e-4, atol=1e-5 * np.abs(t.raw).max())
    grad = camlens.explain(
        probabilities, images, layer=torch_layers, **{**options, "method": "gradcam"}
    )
    assert np.abs(grad.raw - t.raw).max() > 1e-3 * np.abs(t.raw).max()
