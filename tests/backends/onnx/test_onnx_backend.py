"""The ONNX backend against the torch model it was exported from: the same maps, the graph
left as found, the tail of a cut graph, layouts, and the gradient methods refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import camlens  # noqa: E402
import camlens.methods  # noqa: E402
import camlens.metrics  # noqa: E402
from camlens.backends.onnx import OnnxBackend, OnnxModel  # noqa: E402
from camlens.backends.onnx._tail import make_tail  # noqa: E402
from camlens.io import load_model  # noqa: E402
from nets import ChannelsLast, MiniResNet, TrunkHead, export_onnx  # noqa: E402

GRADIENT_FREE = ("scorecam", "ablationcam", "eigencam")
#: Every method camlens has that needs no gradient (the list grows with the registry), but
#: those that read attention maps, which an ONNX model does not give (refused, tested below).
EVERY_GRADIENT_FREE = sorted(
    {
        cls.name
        for cls in camlens.methods.REGISTRY.values()
        if not cls.needs_gradients and not getattr(cls, "reads_attention", False)
    }
)


def _images(n: int = 2, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def _exported(net: torch.nn.Module, x: np.ndarray, tmp_path: Path, **kw: bool) -> OnnxModel:
    export_onnx(net, torch.from_numpy(x), tmp_path / "net.onnx", **kw)
    model = load_model(tmp_path / "net.onnx").model
    assert isinstance(model, OnnxModel)
    return model


_PERTURBING = {"ScoreCAM", "SSCAM", "ISCAM", "AblationCAM", "ReciproCAM"}


# (torch layer, the ONNX tensor the exporter names for its output)
RESNET_LAYERS = [
    ("layer2.1", "/layer2/layer2.1/relu_1/Relu_output_0"),  # the last feature map: GAP head
    ("layer2.0.conv2", "/layer2/layer2.0/conv2/Conv_output_0"),  # the tail reads the block input
    ("layer1.0", "/layer1/layer1.0/relu_1/Relu_output_0"),  # two residual blocks after it
]


# Parity is what is tested: a near-flat map (Recipro-CAM on a tiny random net) is compared too.
@pytest.mark.filterwarnings("ignore::camlens.MapStrengthWarning")
@pytest.mark.parametrize("method", EVERY_GRADIENT_FREE)
@pytest.mark.parametrize(("torch_layer", "onnx_layer"), RESNET_LAYERS)
def test_maps_equal_the_torch_models(
    method: str, torch_layer: str, onnx_layer: str, tmp_path: Path
) -> None:
    net = MiniResNet().eval()
    x = _images()
    model = _exported(net, x, tmp_path)
    perturbs = camlens.methods.REGISTRY[method].__name__ in _PERTURBING
    options = {"batch_size": 5} if perturbs else {}
    target = camlens.TopK(2)
    ours = camlens.explain(model, x, method=method, layer=onnx_layer, target=target, **options)
    ref = camlens.explain(
        net, torch.from_numpy(x), method=method, layer=torch_layer, target=target, **options
    )
    assert ours.framework == "onnx" and ours.layers == (onnx_layer,)
    np.testing.assert_array_equal(ours.units, ref.units)
    np.testing.assert_allclose(ours.scores, ref.scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.raw, ref.raw, atol=1e-4 * np.abs(ref.raw).max())
    # Min-max scaling divides the raw maps' differences by their range: a near-flat map (small
    # contrast) magnifies float32 rounding by 1 / contrast.
    contrast = max(float(ref.strength.contrast.min()), 1e-2)
    np.testing.assert_allclose(ours.maps, ref.maps, atol=1e-4 / contrast)


def test_the_tail_runs_only_the_head_after_the_last_feature_map(tmp_path: Path) -> None:
    x = _images()
    model = _exported(MiniResNet(), x, tmp_path)
    backend = OnnxBackend(model)
    shapes = model.graph().shapes(x.shape[1:])
    last = make_tail(model.graph(), RESNET_LAYERS[0][1], backend.explained, shapes)
    assert last.boundary == () and last.upstream is None
    assert [n.op_type for n in last.graph.graph.node] == ["GlobalAveragePool", "Flatten", "Gemm"]
    inner = make_tail(model.graph(), RESNET_LAYERS[1][1], backend.explained, shapes)
    # The residual branch's input comes from before the cut: computed once per image.
    assert inner.boundary == ("/layer1/layer1.1/relu_1/Relu_output_0",)
    assert inner.upstream is not None


def test_a_shape_read_of_the_input_after_the_cut_sees_the_batch_of_ablations(
    tmp_path: Path,
) -> None:
    class Reshaping(TrunkHead):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.trunk(x)
            return self.fc(self.pool(a).reshape(x.shape[0], -1))  # Shape(x) in the tail

    net = Reshaping().eval()
    x = _images(size=12)
    model = _exported(net, x, tmp_path)
    layer = "/trunk/trunk.4/Relu_output_0"
    tail = make_tail(model.graph(), layer, "y", model.graph().shapes(x.shape[1:]))
    assert tail.boundary == ("x",)  # repeated to the batch, so Shape(x) reads B rows
    ours = camlens.explain(model, x, method="ablationcam", layer=layer, batch_size=3)
    ref = camlens.explain(net, torch.from_numpy(x), method="ablationcam", layer="trunk.4")
    np.testing.assert_allclose(ours.maps, ref.maps, atol=1e-4)


def test_a_model_with_a_fixed_batch_of_one_runs_row_by_row(tmp_path: Path) -> None:
    net = TrunkHead().eval()
    x = _images(n=1, size=12)
    model = _exported(net, x, tmp_path, dynamic=False)
    assert model.graph().fixed_batch == 1
    x3 = _images(n=3, size=12, seed=1)
    for method in GRADIENT_FREE:
        ours = camlens.explain(model, x3, method=method, layer="/trunk/trunk.4/Relu_output_0")
        ref = camlens.explain(net, torch.from_numpy(x3), method=method, layer="trunk.4")
        np.testing.assert_allclose(ours.maps, ref.maps, atol=1e-4)


def test_channels_last_model_and_feature_map(tmp_path: Path) -> None:
    net = ChannelsLast().eval()
    x = np.random.default_rng(2).standard_normal((2, 10, 10, 3)).astype(np.float32)
    model = _exported(net, x, tmp_path)
    backend = OnnxBackend(model)
    assert backend.channels_last
    auto = backend.auto_layer(backend.prepare(x))
    assert model.graph().layouts()[auto.name] == "NHWC"  # the ReLU after the permute
    with torch.no_grad():
        feats = net.features(torch.from_numpy(x)).numpy().transpose(0, 3, 1, 2)  # (N, K, h, w)
        weights = net.fc.weight.numpy()
        logits = net(torch.from_numpy(x)).numpy()
    top = logits.argmax(1)
    ours = camlens.explain(model, x, method="ablationcam", layer=auto.name)
    # Ablation-CAM by hand: w_k = (y - y_k) / y, y_k the score with channel k zeroed; with a
    # GAP + linear head, y - y_k = W[c, k] * mean(A_k).
    y = logits[np.arange(2), top]
    drop = weights[top] * feats.mean(axis=(2, 3))
    expected = np.einsum("nk,nkhw->nhw", drop / y[:, None], feats)
    np.testing.assert_allclose(ours.raw, expected, rtol=1e-4, atol=1e-5)
    eigen = camlens.explain(model, x, method="eigencam", layer=auto.name)
    by_hand = camlens.methods.EigenCAM().cam(np.ascontiguousarray(feats), None)
    np.testing.assert_allclose(eigen.raw, by_hand, rtol=1e-4, atol=1e-5)


def test_the_model_is_left_as_found_and_calls_are_independent(tmp_path: Path) -> None:
    x = _images()
    model = _exported(MiniResNet(), x, tmp_path)
    before = model.proto.SerializeToString()
    first = {m: camlens.explain(model, x, method=m) for m in GRADIENT_FREE}
    camlens.explain(model, _images(seed=5), method="ablationcam", layer=RESNET_LAYERS[1][1])
    again = {m: camlens.explain(model, x, method=m) for m in GRADIENT_FREE}
    assert model.proto.SerializeToString() == before
    for m in GRADIENT_FREE:
        np.testing.assert_allclose(first[m].maps, again[m].maps, atol=1e-6)
    # A batch equals its single calls.
    one = camlens.explain(model, x[1:], method="ablationcam")
    np.testing.assert_allclose(first["ablationcam"].maps[1], one.maps[0], atol=1e-5)


def test_the_automatic_layer_is_the_last_feature_map(tmp_path: Path) -> None:
    x = _images()
    model = _exported(MiniResNet(), x, tmp_path)
    rows = camlens.layers(model, input_size=(16, 16))
    auto = [r for r in rows if r.auto]
    assert [r.name for r in auto] == [RESNET_LAYERS[0][1]]
    assert auto[0].output_shape == (None, 8, 8, 8) and auto[0].type == "Relu"
    head = {r.name: r for r in rows}["/avgpool/GlobalAveragePool_output_0"]
    assert head.output_shape == (None, 8, 1, 1) and not head.candidate
    assert camlens.explain(model, x, method="eigencam").layers == (RESNET_LAYERS[0][1],)


@pytest.mark.parametrize(
    "method", ["gradcam", "gradcam++", "layercam", "eigengradcam", "shapleycam"]
)
def test_gradient_methods_are_refused_naming_those_that_work(method: str, tmp_path: Path) -> None:
    x = _images()
    model = _exported(TrunkHead(), x, tmp_path)
    with pytest.raises(camlens.errors.MethodError) as info:
        camlens.explain(model, x, method=method)
    text = str(info.value)
    assert "needs gradients" in text
    for name in ("scorecam", "ablationcam", "eigencam", "sscam", "iscam"):
        assert name in text
    assert "attentionrollout" not in text  # gradient-free, but no attention maps from ONNX


@pytest.mark.parametrize("method", ["legrad", "attentionrollout"])
def test_attention_methods_are_refused_in_words(method: str, tmp_path: Path) -> None:
    x = _images()
    model = _exported(TrunkHead(), x, tmp_path)
    with pytest.raises(camlens.errors.MethodError, match="no attention maps from onnx models"):
        camlens.explain(model, x, method=method)


def test_the_probe_refuses_hessian_vector_products(tmp_path: Path) -> None:
    x = _images()
    backend = OnnxBackend(_exported(TrunkHead(), x, tmp_path))
    inputs = backend.prepare(x)
    with pytest.raises(camlens.errors.MethodError, match="no Hessian-vector products"):
        backend.probe(
            inputs, [backend.auto_layer(inputs)], camlens.Class(0), gradients=False, hessian=True
        )


def test_input_selection_is_refused_for_a_graph_of_one_input(tmp_path: Path) -> None:
    x = _images()
    model = _exported(TrunkHead(), x, tmp_path)
    with pytest.raises(camlens.UnsupportedModelError, match="input= picks one of several"):
        camlens.ScoreCAM(model, input=0)


def test_a_final_softmax_is_read_before_it_is_applied(tmp_path: Path) -> None:
    net = TrunkHead().eval()
    with_softmax = torch.nn.Sequential(net, torch.nn.Softmax(dim=1)).eval()
    x = _images(size=12)
    model = _exported(with_softmax, x, tmp_path)
    layer = "/0/trunk/trunk.4/Relu_output_0"
    ours = camlens.explain(model, x, method="scorecam", layer=layer)
    assert ours.score_kind == "pre-softmax logit"
    ref = camlens.explain(net, torch.from_numpy(x), method="scorecam", layer="trunk.4")
    np.testing.assert_allclose(ours.scores, ref.scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.maps, ref.maps, atol=1e-4)
    probs = camlens.explain(model, x, method="eigencam", layer=layer, logits=False)
    assert probs.score_kind == "softmax probability"
    np.testing.assert_allclose(
        probs.scores,
        torch.softmax(net(torch.from_numpy(x)), 1).max(1).values.detach().numpy(),
        rtol=1e-5,
    )


def test_metrics_score_the_onnx_model_as_the_torch_one(tmp_path: Path) -> None:
    net = TrunkHead().eval()
    x = _images(size=12)
    model = _exported(net, x, tmp_path)
    exp = camlens.explain(model, x, method="eigencam", layer="/trunk/trunk.4/Relu_output_0")
    ours = camlens.metrics.deletion(model, x, exp, steps=4)
    ref = camlens.metrics.deletion(net, torch.from_numpy(x), exp, steps=4)
    np.testing.assert_allclose(ours.curves, ref.curves, atol=1e-5)
    with pytest.raises(camlens.UnsupportedModelError, match="sanity check"):
        camlens.metrics.sanity_check(model, x, method="eigencam")


def test_deep_feature_factorization_equals_the_torch_models(tmp_path: Path) -> None:
    net = MiniResNet().eval()
    x = _images()
    model = _exported(net, x, tmp_path)
    ours = camlens.factorize(model, x, k=3, layer=RESNET_LAYERS[0][1])
    ref = camlens.factorize(net, torch.from_numpy(x), k=3, layer=RESNET_LAYERS[0][0])
    assert ours.framework == "onnx"
    for name in ("maps", "concepts", "scores"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), atol=1e-4)
