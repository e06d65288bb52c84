"""The report's cohort section: `camlens cohort` on a run folder, then the page, in Chromium too.

The truths here are NumPy computations over the maps the folder saved (``arrays/*.npz``),
grouped by the predictions ``results.jsonl`` records: nothing is read back from cohort.json.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from browser import find_broken_images, keep_artifact, report_page, require_browser
from camlens.cli import main
from camlens.cli._folder import OutputFolder
from camlens.report import write_report
from run_folder import make_run_folder

IMAGES = tuple(f"eyes/{side}/img{i}.jpg" for i, side in enumerate(["left", "right"] * 5))
#: Boxes (y0, x0, y1, x1), end exclusive, on the 48 x 64 maps.
REGIONS = {"centre": [12, 16, 36, 48], "top": [0, 0, 12, 64]}


def _cohort_run(root: Path) -> Path:
    """Write a run folder with saved maps and run `camlens cohort --by predicted` on it."""
    folder = make_run_folder(root, IMAGES, metrics=True, arrays=True, size=(48, 64))
    regions = root.parent / "regions.json"
    regions.write_text(json.dumps(REGIONS))
    args = ["cohort", str(folder), "--method", "gradcam", "--by", "predicted"]
    result = CliRunner().invoke(main, [*args, "--regions", str(regions)])
    assert result.exit_code == 0, result.output
    return folder


def _groups(folder: Path) -> dict[str, np.ndarray]:
    """Return each predicted class's saved gradcam maps, read here from the .npz files."""
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    groups: dict[str, list[np.ndarray]] = {}
    for row in rows:
        if row["method"] == "gradcam":
            with np.load(folder / row["arrays"]) as saved:
                groups.setdefault(row["prediction"]["name"], []).append(saved["map"])
    return {label: np.stack(maps).astype(np.float64) for label, maps in sorted(groups.items())}


def _box(name: str) -> tuple[slice, slice]:
    y0, x0, y1, x1 = REGIONS[name]
    return slice(y0, y1), slice(x0, x1)


def _spearman(maps: np.ndarray) -> float | None:
    """Mean pairwise Spearman correlation by SciPy (None where SciPy is not installed)."""
    if importlib.util.find_spec("scipy") is None:
        return None
    from scipy.stats import spearmanr

    flat = maps.reshape(len(maps), -1)
    pairs = [
        spearmanr(flat[i], flat[j]).statistic
        for i in range(len(flat))
        for j in range(len(flat))
        if i != j
    ]
    return float(np.mean(pairs))


def test_tiles_are_the_group_means_on_one_colour_scale(tmp_path: Path) -> None:
    folder = _cohort_run(tmp_path / "run")
    groups = _groups(folder)
    means = [maps.mean(axis=0) for maps in groups.values()]
    low, high = min(m.min() for m in means), max(m.max() for m in means)
    jet = matplotlib.colormaps["jet"]
    data = json.loads((folder / "cohort.json").read_text())
    assert data["grid"]["scale"] == pytest.approx([low, high], rel=1e-5)
    assert len(data["grid"]["images"]) == len(groups) == 3
    for name, mean in zip(data["grid"]["images"], means, strict=True):
        tile = np.asarray(Image.open(folder / name).convert("RGB")).astype(int)
        expected = np.round(jet((mean - low) / (high - low))[..., :3] * 255).astype(int)
        assert tile.shape == expected.shape
        # One colour scale: a value maps to the same colour in every tile (a value at a bin
        # edge of the colormap may fall in the next bin).
        assert (np.abs(tile - expected).max(axis=-1) <= 1).mean() > 0.995
    # Grouped otherwise, no stale tiles are left behind.
    result = CliRunner().invoke(main, ["cohort", str(folder), "--method", "gradcam"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (folder / "cohort").iterdir()) == ["group-00.png"]
    assert "report: " in result.output


def test_report_cohort_section_in_chromium(tmp_path: Path) -> None:
    require_browser()
    folder = _cohort_run(tmp_path / "run")
    groups = _groups(folder)
    means = {label: maps.mean(axis=0) for label, maps in groups.items()}
    low = min(float(m.min()) for m in means.values())
    high = max(float(m.max()) for m in means.values())
    with report_page(folder / "index.html") as (page, problems):
        find_broken_images(page, problems)  # every image, the tiles included, has pixels
        cells = page.locator("#cohort-grid .cohort-cell")
        assert cells.count() == len(groups) == 3
        labels = cells.evaluate_all("cs => cs.map(c => [c.dataset.group, Number(c.dataset.count)])")
        assert labels == [[label, len(maps)] for label, maps in groups.items()]
        loaded = page.eval_on_selector_all(
            "#cohort-grid img", "imgs => imgs.map(i => i.complete && i.naturalWidth)"
        )
        assert loaded == [64, 64, 64]
        scale = page.locator("#cohort-scale")
        assert float(scale.get_attribute("data-low") or "nan") == pytest.approx(low, rel=1e-5)
        assert float(scale.get_attribute("data-high") or "nan") == pytest.approx(high, rel=1e-5)
        assert float(scale.locator(".low").inner_text()) == pytest.approx(low, rel=1e-3)
        assert float(scale.locator(".high").inner_text()) == pytest.approx(high, rel=1e-3)
        assert scale.locator(".colorbar").is_visible()
        # The region table: mean over the group's images of each map's mass share and mean
        # value inside the box.
        rows = page.locator("#cohort-regions tbody tr")
        assert rows.count() == len(groups) * len(REGIONS)
        for label, maps in groups.items():
            for name in REGIONS:
                row = page.locator(
                    f'#cohort-regions tr[data-group="{label}"][data-region="{name}"]'
                )
                inside = maps[(slice(None), *_box(name))]
                mass = (inside.sum(axis=(1, 2)) / maps.sum(axis=(1, 2))).mean()
                value = inside.mean(axis=(1, 2)).mean()
                area = inside[0].size / maps[0].size
                for stat, expected in (("mass_share", mass), ("mean_value", value)):
                    cell = row.locator(f'td[data-stat="{stat}"]')
                    shown = float(cell.get_attribute("data-value") or "nan")
                    assert shown == pytest.approx(expected, rel=1e-6), (label, name, stat)
                area_cell = row.locator('td[data-stat="area_share"]')
                assert float(area_cell.get_attribute("data-value") or "nan") == area
                assert area_cell.inner_text() == f"{100 * area:.1f} %"
        # Stability: the whole cohort, then each group.
        stability = page.locator("#cohort-stability tbody tr")
        assert stability.evaluate_all("rs => rs.map(r => r.dataset.group)") == ["all", *groups]
        everyone = np.concatenate(list(groups.values()))
        for label, maps in {"all": everyone, **groups}.items():
            row = page.locator(f'#cohort-stability tr[data-group="{label}"]')
            std = float(row.locator('td[data-stat="mean_std"]').get_attribute("data-value") or "")
            assert std == pytest.approx(maps.std(axis=0).mean(), rel=1e-5)
            top = float(row.locator('td[data-stat="max_std"]').get_attribute("data-value") or "")
            assert top == pytest.approx(maps.std(axis=0).max(), rel=1e-5)
            expected = _spearman(maps)
            if expected is not None:
                cell = row.locator('td[data-stat="rank_correlation"]')
                assert float(cell.get_attribute("data-value") or "") == pytest.approx(expected)
        page.click('a[href="#cohort"]')
        assert page.locator("#cohort h2").is_visible()
        page.locator("#cohort").screenshot(path=str(tmp_path / "cohort.png"))
    keep_artifact(tmp_path / "cohort.png", "report-cohort.png")
    assert problems.ok, "\n".join(problems.problems())


def test_a_cohort_older_than_the_results_is_noted(tmp_path: Path) -> None:
    folder = _cohort_run(tmp_path / "run")
    lines = (folder / "results.jsonl").read_text().splitlines()
    (folder / "results.jsonl").write_text("".join(line + "\n" for line in lines[:-4]))
    html = write_report(folder).read_text()
    assert "covers 10 gradcam maps but the folder now holds 8" in html
    assert "camlens cohort" in html and 'id="cohort-grid"' in html


def test_an_unusable_or_older_cohort_file_does_not_break_the_page(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run", IMAGES[:2], methods=("gradcam",))
    (folder / "cohort.json").write_text('{"overall": ')
    html = write_report(folder).read_text()
    assert "cohort.json is unreadable; cohort section left out" in html
    assert 'id="cohort"' not in html
    (folder / "cohort.json").write_text("[1, 2]")
    assert "not what `camlens cohort` writes" in write_report(folder).read_text()
    # An older file: figures but no tiles; groups show placeholders, no colour scale.
    older = {"overall": {"label": "all", "count": 2, "mean_std": 0.1, "rank_correlation": None}}
    (folder / "cohort.json").write_text(json.dumps(older))
    html = write_report(folder).read_text()
    assert 'id="cohort-grid"' in html and "no map" in html and 'id="cohort-scale"' not in html


def test_overwrite_removes_a_previous_cohort(tmp_path: Path) -> None:
    folder = _cohort_run(tmp_path / "run")
    OutputFolder(folder, {"model": "other"}, resume=False, overwrite=True).close()
    assert not (folder / "cohort.json").exists() and not (folder / "cohort.png").exists()
    assert not (folder / "cohort").exists()


def test_camlens_report_rewrites_the_page(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run", IMAGES[:2], methods=("gradcam",))
    result = CliRunner().invoke(main, ["report", str(folder), "--title", "Eyes"])
    assert result.exit_code == 0, result.output
    assert "<title>Eyes</title>" in (folder / "index.html").read_text()
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code != 0 and "has no run.json" in result.output
