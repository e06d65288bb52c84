"""`camlens compare` reads images as `camlens explain` does: notes in its output, no warnings."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image


def test_compare_notes_an_animation_and_skips_a_file_a_decoder_crashes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    from camlens.cli import _compare, main
    from nets import TrunkHead

    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    program = torch.export.export(
        TrunkHead().eval(), (x,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
    )
    torch.export.save(program, tmp_path / "net.pt2")
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (12, 12, 3), np.uint8)) for _ in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=40)
    frames[1].save(tmp_path / "still.png")
    frames[2].save(tmp_path / "tiles.tiff")
    real = _compare.read_image_and_notes

    def flaky(path: Path, **options: object) -> tuple[np.ndarray, tuple[str, ...]]:
        if Path(path).suffix == ".tiff":
            raise IndexError("tile index out of range")  # what a malformed TIFF can raise
        return real(path, **options)

    monkeypatch.setattr(_compare, "read_image_and_notes", flaky)
    images = [str(tmp_path / name) for name in ("anim.gif", "still.png", "tiles.tiff")]
    args = ["compare", str(tmp_path / "net.pt2"), *images, "--out", str(tmp_path / "out")]
    args += ["-m", "gradcam", "--metric", "deletion", "--steps", "2", "--size", "12"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a note, never a CamlensWarning from read_image
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 3, result.output
    lines = result.output.splitlines()
    assert "2 image(s); report: " + str(tmp_path / "out" / "index.html") in lines
    assert (
        f"  note: {tmp_path / 'anim.gif'}: animated (3 frames): only its first frame is used"
    ) in lines
    assert (
        f"  failed: {tmp_path / 'tiles.tiff'}: cannot be read (IndexError: tile index out of range)"
    ) in lines
