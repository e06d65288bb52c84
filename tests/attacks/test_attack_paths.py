"""Attack suite: code planted beside the model or in the current folder.

`camlens explain` run in a folder that holds ``torch.py`` must not execute it; a
``--factory`` module is looked up on the path and in the current folder only, behind every
installed package, and only while it is imported; nothing camlens adds to ``sys.path`` stays.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import camlens
from camlens.io import load_model
from nets import TrunkHead

X = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def _planted(folder: Path, name: str, marker: Path) -> None:
    """Write ``folder/name``: a module that creates ``marker`` when it is imported."""
    (folder / name).write_text(f"open({str(marker)!r}, 'w').close()\n")


def _model_and_image(folder: Path) -> tuple[Path, Path]:
    program = torch.export.export(
        TrunkHead().eval(), (X,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
    )
    torch.export.save(program, folder / "net.pt2")
    Image.new("RGB", (12, 12), (10, 200, 90)).save(folder / "img.png")
    return folder / "net.pt2", folder / "img.png"


def _command(how: str) -> list[str]:
    if how == "console script":
        exe = shutil.which("camlens", path=str(Path(sys.executable).parent))
        if exe is None:
            pytest.skip("the camlens console script is not installed beside this Python")
        return [exe]
    return [sys.executable, "-m", "camlens.cli"]


@pytest.mark.parametrize("how", ["console script", "python -m"])
def test_modules_planted_in_the_current_folder_are_reported_not_run(
    how: str, tmp_path: Path
) -> None:
    model, image = _model_and_image(tmp_path)
    markers = {name: tmp_path / f"ran-{name}" for name in ("torch.py", "keras.py")}
    for name, marker in markers.items():
        _planted(tmp_path, name, marker)
    proc = subprocess.run(
        [*_command(how), "explain", str(model), str(image), "--out", "out", "--size", "12"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert proc.returncode == 0, proc.stderr
    assert [m.name for m in markers.values() if m.exists()] == []
    assert "torch.py in the current folder has the name of the module 'torch'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "out" / "results.jsonl").read_text().count("\n") == 1


def _state_dict(folder: Path) -> Path:
    torch.save(TrunkHead().state_dict(), folder / "weights.pth")
    return folder / "weights.pth"


def test_a_factory_beside_the_model_is_not_imported(tmp_path: Path) -> None:
    """Only the path and the given search folders are searched: not the model's folder."""
    marker = tmp_path / "marker"
    _planted(tmp_path, "camlens_attack_factory.py", marker)
    before = list(sys.path)
    with pytest.raises(camlens.ModelLoadError, match="cannot import module"):
        load_model(_state_dict(tmp_path), factory="camlens_attack_factory:build")
    assert not marker.exists()
    assert sys.path == before


def test_a_search_folder_never_shadows_an_installed_module(tmp_path: Path) -> None:
    """``json.py`` in the search folder: the standard library's json is imported instead."""
    marker = tmp_path / "marker"
    _planted(tmp_path, "json.py", marker)
    before = list(sys.path)
    with pytest.raises(camlens.ModelLoadError, match="module 'json' has no 'build'"):
        load_model(_state_dict(tmp_path), factory="json:build", search_path=[tmp_path])
    assert not marker.exists()
    assert sys.path == before


def test_a_factory_module_in_the_search_folder_is_found_then_taken_off_the_path(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "here"
    folder.mkdir()
    (folder / "camlens_attack_nets.py").write_text(
        "from nets import TrunkHead\n\ndef build():\n    return TrunkHead()\n"
    )
    before = list(sys.path)
    loaded = load_model(
        _state_dict(tmp_path), factory="camlens_attack_nets:build", search_path=[folder]
    )
    assert isinstance(loaded.model, TrunkHead)
    assert sys.path == before
    sys.modules.pop("camlens_attack_nets", None)


def test_a_factory_file_outside_the_project_imports_its_neighbours_only_while_loading(
    tmp_path: Path,
) -> None:
    """``elsewhere/defs/net.py:build`` whose module imports ``blocks.py`` beside it."""
    defs = tmp_path / "elsewhere" / "defs"
    defs.mkdir(parents=True)
    (defs / "camlens_attack_blocks.py").write_text("from nets import TrunkHead\n")
    (defs / "net.py").write_text(
        "from camlens_attack_blocks import TrunkHead\n\ndef build():\n    return TrunkHead()\n"
    )
    before = list(sys.path)
    loaded = load_model(_state_dict(tmp_path), factory=f"{defs / 'net.py'}:build")
    assert type(loaded.model).__name__ == "TrunkHead"
    assert sys.path == before
    sys.modules.pop("camlens_attack_blocks", None)
