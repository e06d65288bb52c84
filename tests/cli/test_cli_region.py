"""`camlens explain --region`: a mask image or auto-fov, recorded, applied to maps and overlays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from commands import run_camlens

torch = pytest.importorskip("torch")

from nets import TrunkHead  # noqa: E402

SIZE = 16


def _disc(centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return np.asarray((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2)


DISCS = {"a": ((7.5, 8.0), 6.0), "b": ((8.0, 7.0), 5.0)}


def _setup(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A small exported network and fundus-like photos: grey textured discs on black."""
    program = torch.export.export(
        TrunkHead().eval(),
        (torch.zeros(2, 3, SIZE, SIZE),),
        dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
    )
    model = tmp_path / "net.pt2"
    torch.export.save(program, model)
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    pixels = {}
    for name, (centre, radius) in DISCS.items():
        disc = _disc(centre, radius)
        grey = np.where(disc, rng.uniform(90, 230, (SIZE, SIZE)), rng.uniform(0, 5, (SIZE, SIZE)))
        pixels[name] = np.repeat(grey.round().astype(np.uint8)[..., None], 3, axis=-1)
        Image.fromarray(pixels[name]).save(images / f"{name}.png")
    return model, images, pixels


def _explain(model: Path, images: Path, out: Path | str, *extra: str):
    return run_camlens(
        "explain", model, images, "--out", out, "--size", str(SIZE), "--layer", "trunk.3", *extra
    )


def _greyed(image: np.ndarray) -> np.ndarray:
    """Half the BT.601 luma, in all three channels (a grey image's luma is its grey)."""
    luma = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.repeat(np.rint(0.5 * luma)[..., None], 3, axis=-1)


def _rows(out: Path) -> list[dict]:
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _check_folder(out: Path, pixels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check every row's saved map and overlay against its saved region; return the regions."""
    rows = _rows(out)
    assert sorted(Path(r["image"]).stem for r in rows) == ["a", "b"]
    regions = {}
    for row in rows:
        with np.load(out / row["arrays"]) as arrays:
            region, cam_map = arrays["region"], arrays["map"].astype(np.float32)
        assert region.dtype == np.bool_ and region.shape == (SIZE, SIZE)
        assert (cam_map[~region] == 0).all() and cam_map[region].max() == pytest.approx(1.0)
        overlay = np.asarray(Image.open(out / row["overlay"]).convert("RGB"))
        image = pixels[Path(row["image"]).stem]
        assert np.abs(overlay[~region] - _greyed(image)[~region]).max() <= 1
        assert (overlay[region] != _greyed(image)[region]).any()  # heat colour inside
        regions[Path(row["image"]).stem] = region
    return regions


def test_a_mask_image_is_the_region_of_every_image(tmp_path: Path) -> None:
    model, images, pixels = _setup(tmp_path)
    mask = np.zeros((2 * SIZE, 2 * SIZE), dtype=np.uint8)  # twice the input: resized, nearest
    mask[6:26, 4:30] = 200
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    result = _explain(model, images, out, "--region", str(tmp_path / "mask.png"))
    assert result.returncode == 0, result.stderr
    expected = np.zeros((SIZE, SIZE), dtype=bool)
    expected[3:13, 2:15] = True
    for region in _check_folder(out, pixels).values():
        np.testing.assert_array_equal(region, expected)
    assert json.loads((out / "run.json").read_text())["region"] == str(tmp_path / "mask.png")
    assert "grey outside" in (out / "index.html").read_text(encoding="utf-8")
    # Resuming with another region is refused; a mask that cannot be read is a usage error.
    refused = _explain(model, images, out, "--resume", "--region", "auto-fov")
    assert refused.returncode != 0 and "region:" in refused.stderr, refused.stderr
    missing = _explain(model, images, tmp_path / "other", "--region", str(tmp_path / "no.png"))
    assert missing.returncode == 2 and "cannot read the mask image" in missing.stderr
    # An fsspec folder runs the batches as a Ray worker does (cli._ray.Batches, from the Job).
    remote = tmp_path / "remote"
    staged = _explain(model, images, f"file://{remote}", "--region", str(tmp_path / "mask.png"))
    assert staged.returncode == 0, staged.stderr
    for region in _check_folder(remote, pixels).values():
        np.testing.assert_array_equal(region, expected)


def test_auto_fov_finds_each_photos_disc_and_the_metrics_stay_inside(tmp_path: Path) -> None:
    model, images, pixels = _setup(tmp_path)
    out = tmp_path / "out"
    result = _explain(model, images, out, "--region", "auto-fov", "--metrics")
    assert result.returncode == 0, result.stderr
    yy, xx = np.mgrid[:SIZE, :SIZE]
    regions = _check_folder(out, pixels)
    for key, region in regions.items():
        (centre, radius) = DISCS[key]
        wrong = region != _disc(centre, radius)
        edge = np.abs(np.hypot(yy - centre[0], xx - centre[1]) - radius)
        assert (edge[wrong] <= 1.5).all(), key
    assert json.loads((out / "run.json").read_text())["region"] == "auto-fov"
    with np.load(out / "maps.npz") as gathered:
        saved = {k.split("-")[0]: gathered[k] for k in gathered.files if k.endswith("/region")}
    assert sorted(saved) == ["a", "b"]
    for key, region in regions.items():
        np.testing.assert_array_equal(saved[key], region)
    assert all(0 <= r["metrics"]["deletion_auc"] <= 1 for r in _rows(out))
