"""`camlens explain --engine ray` on a local Ray cluster: the local command's output, loss-free.

One Ray start for the module (2 CPUs), a tiny convolutional net from a state dict, a folder of
good, corrupt and duplicate images; a worker is killed mid-run and the merged folder must equal
the local command's, image for image.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from commands import run_camlens
from same_runs import assert_same_runs, read_run

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")

PHOTOS = Path(__file__).parents[2] / "src" / "camlens" / "zoo" / "data"

FACTORY = """
from torch import nn


def build() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3),
    )
"""

OPTIONS = ["--factory", "tinynet:build", "--preset", "unit", "--size", "24", "--max-size", "32"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder with the model, its factory and the images; a Ray cluster for the module."""
    root = tmp_path_factory.mktemp("ray")
    (root / "tinynet.py").write_text(FACTORY)
    sys.path.insert(0, str(root))
    try:
        import tinynet
    finally:
        sys.path.remove(str(root))
    torch.manual_seed(0)
    torch.save(tinynet.build().state_dict(), root / "weights.pth")
    images = root / "in"
    images.mkdir()
    photos = sorted(PHOTOS.glob("*.jpg"))
    for i in range(10):
        shutil.copy(photos[i % len(photos)], images / f"photo{i:02d}.jpg")
    shutil.copy(photos[0], images / "duplicate.jpg")  # the same picture under two names
    data = photos[1].read_bytes()
    (images / "corrupt.jpg").write_bytes(data[: len(data) // 3])
    (images / "fake.png").write_text("not a picture")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield root
    finally:
        ray.shutdown()


def _command(root: Path, out: str, *args: str) -> None:
    """Run the installed command (a hang fails at its 10-minute timeout)."""
    result = run_camlens(
        "explain", "weights.pth", "in", "--out", out, "-m", "gradcam", "-m", "layercam",
        "--batch-size", "3", *OPTIONS, *args, cwd=root,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr  # finished; two images failed
    assert "11 image(s) explained" in result.stdout or "resumed" in result.stdout, result.stdout


def test_ray_with_a_killed_worker_equals_the_local_command(workdir: Path) -> None:
    _command(workdir, "local")
    marker = workdir / "crashed"
    address = ray.get_runtime_context().gcs_address
    _command(workdir, "cluster", "--engine", "ray", "--workers", "2", "--address", address,
             "--crash-once", str(marker))  # fmt: skip
    assert marker.exists()  # a worker did die mid-run
    assert_same_runs(workdir / "local", workdir / "cluster")
    failures = read_run(workdir / "cluster")[1]
    assert sorted(Path(f["image"]).name for f in failures) == ["corrupt.jpg", "fake.png"]


def test_resume_skips_finished_images(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from camlens.distributed import explain_dataset

    monkeypatch.chdir(workdir)
    out = workdir / "resumed"

    def explain(*args: str) -> None:
        explain_dataset(
            "weights.pth", ["in"], out, methods=("gradcam", "layercam"), batch_size=3,
            workers=2, options=[*OPTIONS, *args],
        )  # fmt: skip

    explain()
    results = out / "results.jsonl"
    lines = results.read_text().splitlines()
    kept = [line for line in lines if '"photo0' not in line]  # lose ten images' results
    results.write_text("".join(line + "\n" for line in kept))
    kept_file = next(out.glob("overlays/duplicate*"))
    before = kept_file.stat().st_mtime_ns
    explain("--resume")
    assert kept_file.stat().st_mtime_ns == before  # a finished image is not redone
    assert_same_runs(workdir / "local", out)


def test_ray_from_and_to_file_urls_equals_the_local_command(workdir: Path) -> None:
    if not (workdir / "local").exists():
        _command(workdir, "local")
    address = ray.get_runtime_context().gcs_address
    images, out = (workdir / "in").as_uri(), (workdir / "url-out").as_uri()
    for args in ([], ["--resume"]):
        result = run_camlens(
            "explain", "weights.pth", images, "--out", out, "-m", "gradcam", "-m", "layercam",
            "--batch-size", "3", *OPTIONS, "--engine", "ray", "--address", address, *args,
            cwd=workdir,
        )  # fmt: skip
        assert result.returncode == 3, result.stderr
    assert "0 image(s) explained" in result.stdout and "11 already done" in result.stdout
    assert_same_runs(workdir / "local", workdir / "url-out", same_paths=False)
    failures = (workdir / "url-out" / "failures.jsonl").read_text()
    assert f"{images}/corrupt.jpg" in failures and f"{images}/fake.png" in failures
