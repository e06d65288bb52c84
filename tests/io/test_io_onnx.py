"""Loading .onnx files: what they say of their inputs, and clear errors for bad files."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import camlens  # noqa: E402
from camlens.backends.onnx import OnnxModel  # noqa: E402
from camlens.io import load_model  # noqa: E402
from nets import ChannelsLast, TrunkHead, export_onnx  # noqa: E402


@pytest.fixture
def net_file(tmp_path: Path) -> Path:
    export_onnx(TrunkHead(), torch.zeros(1, 3, 12, 12), tmp_path / "net.onnx")
    return tmp_path / "net.onnx"


def test_an_onnx_file_loads_with_its_layout_size_and_channels(net_file: Path) -> None:
    loaded = load_model(net_file)
    assert isinstance(loaded.model, OnnxModel)
    assert (loaded.framework, loaded.layout, loaded.input_size, loaded.channels) == (
        "onnx",
        "NCHW",
        (12, 12),
        3,
    )
    assert loaded.source == "ONNX model net.onnx"
    assert loaded.model.device == "cpu"


def test_a_channels_last_file_says_nhwc(tmp_path: Path) -> None:
    export_onnx(ChannelsLast(), torch.zeros(1, 10, 10, 3), tmp_path / "nhwc.onnx")
    loaded = load_model(tmp_path / "nhwc.onnx")
    assert (loaded.layout, loaded.input_size, loaded.channels) == ("NHWC", (10, 10), 3)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.97])
def test_a_truncated_file_is_refused(net_file: Path, fraction: float) -> None:
    data = net_file.read_bytes()
    net_file.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(camlens.ModelLoadError, match=r"'net.onnx' is not a valid ONNX"):
        load_model(net_file)


def test_an_opset_newer_than_onnx_knows_is_refused(net_file: Path) -> None:
    proto = onnx.load(str(net_file))
    proto.opset_import[0].version = onnx.defs.onnx_opset_version() + 70
    onnx.save(proto, str(net_file))
    with pytest.raises(camlens.ModelLoadError, match=r"opset .* newer than any this onnx knows"):
        load_model(net_file)


def test_a_graph_invalid_at_its_opset_is_refused(net_file: Path) -> None:
    proto = onnx.load(str(net_file))
    proto.opset_import[0].version = 3  # its operators' signatures do not exist at opset 3
    onnx.save(proto, str(net_file))
    # The checker or onnxruntime (an operator with no kernel at that version) says so.
    match = "is not a valid ONNX model|onnxruntime cannot run 'net.onnx' .*Relu.*opset"
    with pytest.raises(camlens.ModelLoadError, match=match):
        load_model(net_file)


def test_custom_operators_are_refused_and_no_library_is_loaded(net_file: Path) -> None:
    proto = onnx.load(str(net_file))
    proto.graph.node[0].domain = "com.example.custom"
    proto.opset_import.append(onnx.helper.make_opsetid("com.example.custom", 1))
    onnx.save(proto, str(net_file))
    with pytest.raises(camlens.ModelLoadError, match=r"'com.example.custom'.*custom-op library"):
        load_model(net_file)


def test_a_model_without_a_spatial_layer_has_no_automatic_layer(tmp_path: Path) -> None:
    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))

    export_onnx(Pooled(), torch.zeros(1, 3, 8, 8), tmp_path / "pooled.onnx")
    model = load_model(tmp_path / "pooled.onnx").model
    rows = camlens.layers(model)
    assert rows and not any(r.candidate or r.auto for r in rows)
    x = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(camlens.LayerError, match=r"found no tensor .* spatial 4-D output"):
        camlens.explain(model, x, method="eigencam")
    pooled = next(r.name for r in rows if r.type == "GlobalAveragePool")
    with warnings.catch_warnings(record=True) as caught:  # as on torch: a warning
        warnings.simplefilter("always")
        camlens.explain(model, x, method="eigencam", layer=pooled)
    assert any("1x1 spatial output" in str(w.message) for w in caught)


def test_layer_names_are_checked_with_suggestions(net_file: Path) -> None:
    model = load_model(net_file).model
    with pytest.raises(camlens.LayerNotFoundError, match=r"did you mean '/trunk/trunk.4/Relu"):
        camlens.EigenCAM(model, layer="/trunk/trunk.4/Relu_output")
    with pytest.raises(camlens.LayerError, match=r"the model's input or a weight"):
        camlens.EigenCAM(model, layer="x")
    # A node's name stands for its one output.
    node = next(n for n in model.proto.graph.node if n.output[0] == "/trunk/trunk.4/Relu_output_0")
    assert camlens.EigenCAM(model, layer=node.name).layers == ("/trunk/trunk.4/Relu_output_0",)


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here"
)
def test_cuda_without_a_cuda_onnxruntime_says_what_to_install(net_file: Path) -> None:
    with pytest.raises(camlens.ModelLoadError, match=r"CUDA execution provider.*onnxruntime-gpu"):
        load_model(net_file, device="cuda")


def test_a_device_onnxruntime_does_not_run_on_is_refused(net_file: Path) -> None:
    with pytest.raises(camlens.ModelLoadError, match=r"device='tpu'.*'cpu', 'cuda'"):
        load_model(net_file, device="tpu")


def test_a_factory_is_refused_for_an_onnx_file(net_file: Path) -> None:
    with pytest.raises(camlens.ModelLoadError, match=r"ONNX model, which holds its own model"):
        load_model(net_file, factory="nets:TrunkHead")


def test_a_bare_model_proto_is_pointed_to_the_wrapper(net_file: Path) -> None:
    with pytest.raises(camlens.UnsupportedModelError, match=r"OnnxModel\(proto\)"):
        camlens.explain(onnx.load(str(net_file)), np.zeros((1, 3, 12, 12), np.float32))


def test_the_wrapper_takes_a_proto_and_reads_inputs_as_given(net_file: Path) -> None:
    model = OnnxModel(onnx.load(str(net_file)))
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
    exp = camlens.explain(model, x, method="eigencam")
    assert exp.maps.shape == (2, 12, 12)
    with pytest.raises(camlens.BadInputError, match=r"do not fit .*input \(None, 3, 12, 12\)"):
        camlens.explain(model, x[:, :, :8, :8], method="eigencam")
    with pytest.raises(camlens.BadInputError, match=r"no batch axis"):
        camlens.explain(model, x[0], method="eigencam")
    with pytest.raises(camlens.BadInputError, match=r"NaN"):
        camlens.explain(model, np.full_like(x, np.nan), method="eigencam")


def test_without_onnxruntime_the_error_says_what_to_install(net_file: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['onnxruntime'] = None\n"
        "import camlens\n"
        "from camlens.io import load_model\n"
        "try:\n"
        f"    load_model({str(net_file)!r})\n"
        "except camlens.ModelLoadError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "needs onnxruntime, which is not installed: pip install 'camlens[onnx]'" in result.stdout
