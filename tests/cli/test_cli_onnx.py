"""The commands on an .onnx file: layers, explain into a report, compare; the same maps as the
torch.export program of the same network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from camlens.cli import main  # noqa: E402
from nets import TrunkHead, export_onnx  # noqa: E402


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    net = TrunkHead().eval()
    x = torch.zeros(2, 3, 12, 12)  # batch 2: torch.export specialises a batch of 1
    export_onnx(net, x, tmp_path / "net.onnx")
    program = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    torch.export.save(program, tmp_path / "net.pt2")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), np.uint8)).save(tmp_path / f"im{i}.png")
    return {
        "onnx": tmp_path / "net.onnx",
        "pt2": tmp_path / "net.pt2",
        "images": tmp_path,
        "out": tmp_path / "out",
    }


def _images(files: dict[str, Path]) -> list[str]:
    return [str(files["images"] / f"im{i}.png") for i in range(2)]


def test_layers_lists_the_graphs_tensors_and_the_automatic_pick(files: dict[str, Path]) -> None:
    result = CliRunner().invoke(main, ["layers", str(files["onnx"])])
    assert result.exit_code == 0, result.output
    assert "ONNX model net.onnx: 7 layers" in result.output
    assert "automatic pick: /trunk/trunk.4/Relu_output_0" in result.output
    row = next(line for line in result.output.splitlines() if "trunk.4/Relu" in line)
    assert "(N, 16, 6, 6)" in row and "auto" in row


def test_explain_writes_the_maps_the_torch_program_gives_and_a_report(
    files: dict[str, Path],
) -> None:
    maps = {}
    for kind in ("onnx", "pt2"):
        out = files["out"] / kind
        args = ["explain", str(files[kind]), *_images(files), "--out", str(out), "--size", "12"]
        if kind == "pt2":
            args += ["-m", "ablationcam"]  # the ONNX run's default method
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert "2 image(s) explained" in result.output
        assert (out / "index.html").is_file()
        with np.load(out / "maps.npz") as arrays:
            maps[kind] = {key: arrays[key] for key in arrays.files}
    assert sorted(maps["onnx"]) == sorted(maps["pt2"])
    assert all("__ablationcam/" in key for key in maps["onnx"])
    for key, value in maps["onnx"].items():
        np.testing.assert_allclose(value, maps["pt2"][key], atol=1e-4)
    run = json.loads((files["out"] / "onnx" / "run.json").read_text())
    assert (run["framework"], run["methods"]) == ("onnx", ["ablationcam"])


def test_a_gradient_method_is_a_usage_error_naming_the_methods_that_work(
    files: dict[str, Path],
) -> None:
    args = ["explain", str(files["onnx"]), *_images(files), "--out", str(files["out"])]
    result = CliRunner().invoke(main, [*args, "-m", "gradcam"])
    assert result.exit_code == 2
    assert "gradcam needs gradients" in result.output
    assert "scorecam" in result.output and "ablationcam" in result.output


def test_compare_runs_the_gradient_free_methods_into_the_report(files: dict[str, Path]) -> None:
    out = files["out"]
    args = ["compare", str(files["onnx"]), *_images(files), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--metric", "deletion", "--steps", "2"])
    assert result.exit_code == 0, result.output
    table = json.loads((out / "compare.json").read_text())
    assert [row[0] for row in table["rows"]] == ["ablationcam", "scorecam", "eigencam"]
    assert (out / "index.html").is_file()
