"""camlens.cohort against NumPy computations written here, on synthetic cohorts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import camlens
from camlens.cohort import rank_correlation
from camlens.errors import BadInputError


def _write_folder(root: Path, maps: np.ndarray, values: np.ndarray, method: str = "gradcam"):
    (root / "arrays").mkdir(parents=True)
    lines = []
    for i, (m, v) in enumerate(zip(maps, values, strict=True)):
        key = f"{i:04d}-eye"
        name = f"arrays/{key}__{method}.npz"
        np.savez(root / name, map=m, raw=m - 0.5)
        row = {
            "image": f"eye{i}.jpg",
            "key": key,
            "method": method,
            "target": "top1",
            "prediction": {"unit": 0, "name": None, "value": float(v)},
            "arrays": name,
            "status": "ok",
        }
        lines.append(json.dumps(row) + "\n")
    (root / "results.jsonl").write_text("".join(lines), encoding="utf-8")


def _age_cohort(n: int = 40, seed: int = 0):
    """Maps of noise whose 'age' signal lives only in the box rows 4..8, cols 10..14."""
    rng = np.random.default_rng(seed)
    ages = rng.uniform(20, 80, size=n)
    maps = rng.uniform(0, 0.2, size=(n, 16, 20))
    maps[:, 4:8, 10:14] += ((ages - 20) / 60)[:, None, None]
    return maps, ages


def test_means_equal_numpy_over_the_saved_maps(tmp_path):
    maps, ages = _age_cohort()
    _write_folder(tmp_path, maps, ages)
    saved = camlens.load_folder(tmp_path)
    # Independent truth: read each saved file here and average with NumPy.
    files = sorted((tmp_path / "arrays").glob("*.npz"))
    by_hand = np.stack([np.load(f)["map"] for f in files])
    result = camlens.cohort(saved.maps)
    np.testing.assert_allclose(result.overall.mean, by_hand.mean(axis=0))
    np.testing.assert_allclose(result.overall.median, np.median(by_hand, axis=0))
    np.testing.assert_allclose(result.overall.std, by_hand.std(axis=0))
    np.testing.assert_allclose(saved.values, ages)
    signed = camlens.cohort(np.stack(saved.raw))
    np.testing.assert_allclose(signed.overall.mean, by_hand.mean(axis=0) - 0.5)


def test_the_age_signal_region_is_found():
    maps, ages = _age_cohort()
    labels = camlens.assign_bins(ages, bins=2)
    regions = {"signal": (4, 10, 8, 14), "elsewhere": (10, 0, 14, 4)}
    result = camlens.cohort(maps, groups=labels, regions=regions, seed=1)
    young, old = result.groups
    assert young.label.startswith("[") and old.label.endswith("]")
    # The difference of the group means peaks inside the signal box.
    diff = old.mean - young.mean
    peak = np.unravel_index(np.argmax(diff), diff.shape)
    assert 4 <= peak[0] < 8 and 10 <= peak[1] < 14
    sig_old, else_old = old.regions
    sig_young = young.regions[0]
    assert sig_old.mass_share > sig_old.area_share > else_old.mass_share / 2
    assert sig_old.mass_ci[0] > sig_young.mass_ci[1]  # intervals separate old from young
    assert else_old.mean_ci[0] < 0.1 < else_old.mean_ci[1]  # noise: uniform on [0, 0.2]


def test_group_assignment_by_quantiles_and_edges():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert camlens.assign_bins(values, bins=3) == [
        "[1, 2.667)", "[1, 2.667)", "[2.667, 4.333)", "[2.667, 4.333)",
        "[4.333, 6]", "[4.333, 6]",
    ]  # fmt: skip
    assert camlens.assign_bins(values, edges=[0, 3, 6]) == ["[0, 3)"] * 2 + ["[3, 6]"] * 4
    with pytest.raises(BadInputError, match="widen the edges"):
        camlens.assign_bins(values, edges=[2, 6])
    with pytest.raises(BadInputError, match="exactly one"):
        camlens.assign_bins(values)
    maps = np.arange(6 * 4, dtype=float).reshape(6, 2, 2)
    result = camlens.cohort(maps, groups=["b", "a", "b", "a", "b", "a"])
    assert [(g.label, g.count) for g in result.groups] == [("a", 3), ("b", 3)]
    np.testing.assert_allclose(result.groups[0].mean, maps[[1, 3, 5]].mean(axis=0))


def test_bootstrap_interval_matches_a_reference_and_covers_the_mean():
    rng = np.random.default_rng(3)
    maps = rng.uniform(0, 1, size=(30, 4, 4))
    result = camlens.cohort(maps, regions={"top": (0, 0, 2, 4)}, n_boot=500, seed=7)
    stat = result.overall.regions[0]
    mass = maps[:, :2, :].sum(axis=(1, 2)) / maps.sum(axis=(1, 2))
    assert stat.mass_share == pytest.approx(mass.mean())
    assert stat.mass_ci[0] < mass.mean() < stat.mass_ci[1]
    # The interval's width is close to the normal approximation's 2 * 1.96 * sd / sqrt(n).
    width = 2 * 1.96 * mass.std(ddof=1) / np.sqrt(mass.size)
    assert stat.mass_ci[1] - stat.mass_ci[0] == pytest.approx(width, rel=0.25)
    again = camlens.cohort(maps, regions={"top": (0, 0, 2, 4)}, n_boot=500, seed=7)
    assert again.overall.regions[0].mass_ci == stat.mass_ci  # seeded


def test_rank_correlation_of_known_cases():
    base = np.arange(16, dtype=float).reshape(4, 4)
    assert rank_correlation(np.stack([base, base * 3 + 1, base**2])) == pytest.approx(1.0)
    assert rank_correlation(np.stack([base, -base])) == pytest.approx(-1.0)
    stab = camlens.tta_stability(np.stack([np.stack([base]), np.stack([base[:, ::-1]])]))
    # Reference: Spearman of base against its mirror, without ties = Pearson of the ranks.
    a, b = base.ravel(), base[:, ::-1].ravel()
    assert stab["rank_correlation"] == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert stab["pixel_std"] == pytest.approx(np.abs(a - b).mean() / 2)


def test_bad_inputs_are_refused_in_words(tmp_path):
    with pytest.raises(BadInputError, match="labels"):
        camlens.cohort(np.zeros((3, 2, 2)), groups=["a"])
    with pytest.raises(BadInputError, match="NaN"):
        camlens.cohort(np.full((2, 2, 2), np.nan))
    with pytest.raises(BadInputError, match="covers no pixel"):
        camlens.cohort(np.zeros((2, 4, 4)), regions={"out": (9, 9, 12, 12)})
    with pytest.raises(BadInputError, match="camlens explain"):
        camlens.load_folder(tmp_path)


def test_cli_cohort_writes_json_and_one_scale_grid(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from camlens.cli import main

    maps, ages = _age_cohort(n=24)
    _write_folder(tmp_path, maps, ages)
    (tmp_path / "regions.json").write_text(json.dumps({"signal": [4, 10, 8, 14]}))
    keys = [f"{i:04d}-eye" for i in range(24)]
    sex = ["f" if i % 3 else "m" for i in range(24)]
    (tmp_path / "meta.csv").write_text(
        "key,sex\n" + "".join(f"{k},{s}\n" for k, s in zip(keys, sex, strict=True))
    )
    runner = CliRunner()
    out = runner.invoke(
        main,
        ["cohort", str(tmp_path), "--by", "bins:3", "--regions", str(tmp_path / "regions.json")],
    )
    assert out.exit_code == 0, out.output
    data = json.loads((tmp_path / "cohort.json").read_text())
    assert [g["count"] for g in data["groups"]] == [8, 8, 8]
    shares = [g["regions"][0]["mass_share"] for g in data["groups"]]
    assert shares == sorted(shares)  # older bins: more mass in the signal box
    # Independent check of one group's mass share from the maps of its images.
    order = np.argsort(ages)
    young = maps[order[:8]]
    expected = (young[:, 4:8, 10:14].sum(axis=(1, 2)) / young.sum(axis=(1, 2))).mean()
    assert shares[0] == pytest.approx(expected)
    assert Image.open(tmp_path / "cohort.png").size[0] == 3 * 160
    out = runner.invoke(main, ["cohort", str(tmp_path), "--by", f"csv:{tmp_path / 'meta.csv'}:sex"])
    assert out.exit_code == 0, out.output
    data = json.loads((tmp_path / "cohort.json").read_text())
    assert [(g["label"], g["count"]) for g in data["groups"]] == [("f", 16), ("m", 8)]
    out = runner.invoke(main, ["cohort", str(tmp_path), "--by", "nonsense"])
    assert out.exit_code != 0 and "csv:FILE:COLUMN" in out.output
