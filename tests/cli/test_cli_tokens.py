"""A vision transformer through the command: its token layers listed, explained, reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import camlens
from commands import run_camlens

torch = pytest.importorskip("torch")

TESTS = Path(__file__).parents[1]
PHOTOS = TESTS.parent / "src" / "camlens" / "zoo" / "data"
FACTORY = f"""
import sys
import torch
sys.path.insert(0, {str(TESTS)!r})
from vits import TinyViT


def build(patch=8):
    torch.manual_seed(0)
    return TinyViT(patch=patch)


def coarse():
    return build(patch=16)
"""


@pytest.fixture
def vit_folder(tmp_path: Path) -> Path:
    (tmp_path / "vitfactory.py").write_text(FACTORY)
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        import vitfactory
    finally:
        sys.path.remove(str(tmp_path))
    torch.save(vitfactory.build().state_dict(), tmp_path / "vit.pth")
    torch.save(vitfactory.coarse().state_dict(), tmp_path / "coarse.pth")
    for name in ("chelsea", "coffee"):
        shutil.copy(PHOTOS / f"{name}.jpg", tmp_path / f"{name}.jpg")
    return tmp_path


def test_layers_lists_token_layers_on_their_grid(vit_folder: Path) -> None:
    result = run_camlens(
        "layers", "vit.pth", "--factory", "vitfactory:build", "--size", "32", cwd=vit_folder
    )
    assert result.returncode == 0, result.stderr
    norm = next(line for line in result.stdout.splitlines() if "blocks.1.norm1 " in line)
    assert "tokens 1+4x4" in norm and "auto" in norm
    embed = next(line for line in result.stdout.splitlines() if "patch_embed " in line)
    assert "nchw 4x4" in embed
    assert "automatic pick: blocks.1.norm1" in result.stdout


def test_explain_on_a_token_layer_gives_the_librarys_maps_and_a_report(vit_folder: Path) -> None:
    out = vit_folder / "out"
    common = ("--factory", "vitfactory:build", "--preset", "unit", "--size", "32")
    result = run_camlens("explain", "vit.pth", "chelsea.jpg", "coffee.jpg", *common, "--out", out,
                  cwd=vit_folder)  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["layer"] for r in records] == ["blocks.1.norm1"] * 2
    assert (out / "index.html").is_file()

    import vitfactory  # importable: the fixture's folder is on sys.path while it imports

    model = vitfactory.build().eval()
    for record in records:
        pixels = np.asarray(
            Image.open(vit_folder / Path(record["image"]).name)
            .convert("RGB")
            .resize((32, 32), Image.Resampling.BILINEAR),
            dtype=np.float32,
        )
        x = torch.from_numpy(pixels / 255.0).permute(2, 0, 1)[None]
        exp = camlens.explain(model, x, layer="blocks.1.norm1")
        with np.load(out / "maps.npz") as arrays:
            raw = arrays[f"{Path(record['arrays']).stem}/raw"]
        assert raw.shape == (4, 4)
        np.testing.assert_allclose(raw, exp.raw[0], rtol=1e-3, atol=1e-3 * np.abs(raw).max())


def test_an_ambiguous_grid_names_the_option_and_grid_decides(vit_folder: Path) -> None:
    # 5 tokens on 32x32: 2x2 patches after a class token, or 1 patch after 4 prefix tokens.
    out = vit_folder / "out"
    common = ("coarse.pth", "chelsea.jpg", "--factory", "vitfactory:coarse", "--preset", "unit",
              "--size", "32", "--layer", "blocks.1.norm1")  # fmt: skip
    failed = run_camlens("explain", *common, "--out", vit_folder / "failed", cwd=vit_folder)
    assert failed.returncode != 0
    assert "grid" in failed.stderr and "Traceback" not in failed.stderr
    bad = run_camlens(
        "explain", *common, "--out", vit_folder / "bad", "--grid", "2by2", cwd=vit_folder
    )
    assert bad.returncode == 2 and "HxW" in bad.stderr
    done = run_camlens("explain", *common, "--out", out, "--grid", "2x2", cwd=vit_folder)
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    with np.load(out / "maps.npz") as arrays:
        assert arrays[f"{Path(record['arrays']).stem}/raw"].shape == (2, 2)
    run = json.loads((out / "run.json").read_text())
    assert run["grid"] == "2x2" and run["layer_layout"] == "auto"
