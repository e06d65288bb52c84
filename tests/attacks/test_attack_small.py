"""Attack suite, small inputs that used to end badly: kills mid-write, animations, bombs, meta.

- A run killed (SIGKILL) while writing leaves no temporary file in its output folder where the
  OS has unnamed files (Linux), and the next run removes any a kill left elsewhere.
- An animated image is explained on its first frame, with a note that says so.
- An image over Pillow's decompression-bomb threshold is read with camlens's own one-line note;
  one over twice the threshold is a failure with a message that says what to do. Pillow's own
  warning never reaches stderr.
- A model or an input on PyTorch's ``meta`` device is refused with a camlens error, and the
  model is left as found.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import camlens
from camlens.cli._folder import OutputFolder, replace_file, write_file
from camlens.io import find_images, read_image
from camlens.report import read_folder
from nets import TrunkHead

X = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
SETTINGS = {"model": "net.pt2", "methods": ["gradcam"]}
HAVE_UNNAMED_FILES = hasattr(os, "O_TMPFILE")


def _files(root: Path) -> set[str]:
    """Return every file under ``root`` (hidden ones too), relative to it."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


# --- 1. Temporary files after a failed or killed write ------------------------------------------


@pytest.mark.parametrize("unnamed", [True, False], ids=["O_TMPFILE", "named temp file"])
def test_a_write_that_fails_midway_leaves_the_old_file_and_nothing_else(
    unnamed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if unnamed and not HAVE_UNNAMED_FILES:
        pytest.skip("this OS has no O_TMPFILE")
    if not unnamed:
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    target = tmp_path / "maps.npz"
    write_file(target, b"old")

    def half_then_fail(f: object) -> None:
        f.write(b"half of the new")  # type: ignore[attr-defined]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_file(target, half_then_fail)
    assert _files(tmp_path) == {"maps.npz"} and target.read_bytes() == b"old"
    write_file(target, b"new")
    assert _files(tmp_path) == {"maps.npz"} and target.read_bytes() == b"new"


# Starts a run's folder, then gathers maps.npz with an np.savez that writes part of the file,
# says so on stdout and waits to be killed.
_KILLED_WRITER = """
import os, sys, time
from pathlib import Path
import numpy as np
from camlens.cli._folder import OutputFolder

if sys.argv[2] == "named":
    del os.O_TMPFILE

def savez_then_hang(file, **arrays):
    f = open(file, "wb") if isinstance(file, (str, os.PathLike)) else file
    f.write(b"PK" * 4096)
    f.flush()
    print("writing", flush=True)
    time.sleep(60)

np.savez = savez_then_hang
settings = {"model": "net.pt2", "methods": ["gradcam"]}
folder = OutputFolder(Path(sys.argv[1]), settings, resume=False, overwrite=False)
folder.close()
folder.gather_arrays()
"""


def _kill_while_writing(root: Path, how: str) -> int:
    """Run :data:`_KILLED_WRITER` on ``root``, SIGKILL it mid-write; return its pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(root), how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line == "writing\n", proc.stderr.read() if proc.stderr else line
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.communicate()
    return proc.pid


RUN_FILES = {"run.json", "results.jsonl", "results.csv", "failures.jsonl"}


@pytest.mark.skipif(not HAVE_UNNAMED_FILES, reason="this OS has no O_TMPFILE")
def test_a_run_killed_while_writing_leaves_no_temporary_file(tmp_path: Path) -> None:
    _kill_while_writing(tmp_path / "out", "unnamed")
    assert _files(tmp_path / "out") == RUN_FILES


@pytest.mark.parametrize("how", ["fresh", "resume", "overwrite"])
def test_the_next_run_removes_what_a_killed_one_left(how: str, tmp_path: Path) -> None:
    """Where the OS has no unnamed files a kill leaves ``.maps.npz.<pid>.tmp``: removed."""
    out = tmp_path / "out"
    pid = _kill_while_writing(out, "named")
    assert _files(out) == RUN_FILES | {f".maps.npz.{pid}.tmp"}
    # What earlier versions and the report's writer leave, and files camlens must keep.
    stale = ["results.jsonl.tmp", "maps.npz.tmp.npz", ".index-x1y2.html.tmp", "images/a.jpg.tmp"]
    stale += ["overlays/.a__gradcam.png.77.tmp"]
    kept = ["notes.tmp", ".mine", "images/a.jpg"]
    for name in stale + kept:
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_bytes(b"x")
    if how == "fresh":
        for name in RUN_FILES:
            (out / name).unlink()
    folder = OutputFolder(out, SETTINGS, resume=how == "resume", overwrite=how == "overwrite")
    folder.close()
    left = _files(out)
    assert not {name for name in left if name.endswith(".tmp") and name != "notes.tmp"}, left
    assert {"notes.tmp", ".mine"} <= left
    assert ("images/a.jpg" in left) == (how != "overwrite")  # --overwrite clears images/
    folder.gather_arrays()
    assert read_folder(out).notes == []
    assert _files(out) == left | {"maps.npz"}


# --- 2. Animated images -------------------------------------------------------------------------


def _animation(path: Path, size: tuple[int, int] = (12, 12)) -> Path:
    """Write a 3-frame animation: frames gray 30, 120 and 220, each with a white square."""
    frames = [Image.new("RGB", size, (v, v, v)) for v in (30, 120, 220)]
    for frame in frames:
        ImageDraw.Draw(frame).rectangle((2, 2, 5, 5), fill=(250, 250, 250))
    frames[0].save(
        path, save_all=True, append_images=frames[1:], duration=40, loop=0, lossless=True
    )
    return path


@pytest.mark.parametrize("suffix", [".gif", ".png", ".webp"])
def test_an_animation_gives_its_first_frame_with_a_warning(suffix: str, tmp_path: Path) -> None:
    path = _animation(tmp_path / f"anim{suffix}")
    with pytest.warns(camlens.CamlensWarning) as caught:
        pixels = read_image(path)
    assert [str(w.message) for w in caught] == [
        f"{path}: animated (3 frames): only its first frame is used"
    ]
    with Image.open(path) as im:
        first = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(pixels, first)
    assert pixels[-1, -1].tolist() == [30, 30, 30]
    assert find_images([tmp_path]).images == (path,)  # a folder scan takes it too


def test_a_still_gif_reads_without_a_warning(tmp_path: Path) -> None:
    Image.new("RGB", (5, 4), (200, 10, 10)).save(tmp_path / "still.gif")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(tmp_path / "still.gif").shape == (4, 5, 3)


# --- 3. Decompression bombs ---------------------------------------------------------------------


def test_an_image_over_the_bomb_threshold_is_read_with_camlens_own_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("L", (40, 30), 90).save(tmp_path / "big.png")  # 1200 pixels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pixels = read_image(tmp_path / "big.png", max_size=20)
    assert pixels.shape == (15, 20, 3)
    assert [(w.category, str(w.message)) for w in caught] == [
        (
            camlens.CamlensWarning,
            f"{tmp_path / 'big.png'}: a huge image (0.0012 megapixels, over Pillow's "
            "decompression-bomb warning threshold of 0.001); read anyway: check that the file "
            "is the picture you meant",
        )
    ]
    assert Image.MAX_IMAGE_PIXELS == 1000  # Pillow's limit is read, never changed


def test_an_image_over_the_bomb_limit_fails_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("L", (50, 50)).save(tmp_path / "bomb.png")  # 2500 pixels, over 2 x 1000
    with pytest.raises(camlens.BadInputError) as caught:
        read_image(tmp_path / "bomb.png")
    assert str(caught.value) == (
        f"{tmp_path / 'bomb.png'}: 0.0025 megapixels is over Pillow's decompression-bomb limit "
        "of 0.002; downscale or tile the image first (in Python, raising "
        "PIL.Image.MAX_IMAGE_PIXELS lets a file you trust through)"
    )
    assert Image.MAX_IMAGE_PIXELS == 1000


# --- The command line on all of these -----------------------------------------------------------


RNG = np.random.default_rng(0)


def _one_bit(width: int, height: int) -> Image.Image:
    """Return a 1-bit picture of that size: white with a black square in its middle."""
    im = Image.new("1", (width, height), 1)
    ImageDraw.Draw(im).rectangle((width // 3, height // 3, width // 2, height // 2), fill=0)
    return im


def _camlens() -> list[str]:
    exe = shutil.which("camlens", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "camlens.cli"]


def test_the_command_notes_animations_and_huge_images_and_fails_bombs(tmp_path: Path) -> None:
    """Real sizes: 90 and 190 megapixels (1-bit PNGs, a few KB each)."""
    folder = tmp_path / "in"
    folder.mkdir()
    start = time.perf_counter()
    _animation(folder / "anim.gif")
    _one_bit(10000, 9000).save(folder / "big.png")
    _one_bit(14000, 13600).save(folder / "bomb.png")
    Image.fromarray(RNG.integers(0, 256, (12, 12, 3), np.uint8)).save(folder / "ok.png")
    assert time.perf_counter() - start < 5
    program = torch.export.export(
        TrunkHead().eval(), (X,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
    )
    torch.export.save(program, tmp_path / "net.pt2")
    proc = subprocess.run(
        [*_camlens(), "explain", "net.pt2", "in", "--out", "out", "--size", "12"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 3, proc.stderr  # finished; one image failed
    lines = proc.stdout.splitlines()
    assert "  note: in/anim.gif: animated (3 frames): only its first frame is used" in lines
    assert (
        "  note: in/big.png: a huge image (90 megapixels, over Pillow's decompression-bomb "
        "warning threshold of 89.5); read anyway: check that the file is the picture you meant"
    ) in lines
    assert (
        "  failed: in/bomb.png: 190 megapixels is over Pillow's decompression-bomb limit of 179; "
        "downscale or tile the image first (in Python, raising PIL.Image.MAX_IMAGE_PIXELS lets "
        "a file you trust through)"
    ) in lines
    assert "3 image(s) explained" in proc.stdout
    assert "DecompressionBomb" not in proc.stderr and "Traceback" not in proc.stderr
    assert not re.search(r"\.py:\d+: \w*Warning", proc.stderr), proc.stderr  # no source line
    shown = next((tmp_path / "out" / "images").glob("anim-*.jpg"))
    with Image.open(shown) as im:
        assert np.abs(np.asarray(im)[-1, -1] - 30.0).max() < 5  # the first frame


# --- 4. The meta device -------------------------------------------------------------------------


def _hooks(model: torch.nn.Module) -> list[object]:
    return [
        hook
        for module in model.modules()
        for hooks in (
            module._forward_hooks,
            module._forward_pre_hooks,
            module._backward_hooks,
            module._backward_pre_hooks,
        )
        for hook in hooks.values()
    ]


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_a_model_on_the_meta_device_is_refused_and_left_as_found(method: str) -> None:
    with torch.device("meta"):
        model = TrunkHead()
    with pytest.raises(camlens.UnsupportedModelError, match=r"to_empty\(device='cpu'\)"):
        camlens.explain(model, X, method=method)
    assert _hooks(model) == [] and model.training
    assert all(p.device.type == "meta" and p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_inputs_on_the_meta_device_are_refused_and_the_model_left_as_found(method: str) -> None:
    model = TrunkHead().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(camlens.BadInputError, match="inputs are on the 'meta' device"):
        camlens.explain(model, X.to("meta"), method=method)
    assert _hooks(model) == [] and not model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_refusals_read_well() -> None:
    with torch.device("meta"):
        model = TrunkHead()
    with pytest.raises(camlens.CamlensError) as caught:
        camlens.explain(model, X)
    assert str(caught.value) == (
        "the model's parameters are on the 'meta' device (shapes without values), so it cannot "
        "run; give it real weights first, e.g. model.to_empty(device='cpu') then "
        "model.load_state_dict(...)"
    )
