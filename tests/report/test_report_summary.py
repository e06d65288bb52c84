"""The report's method summary, regressor values, preprocessing text and image paths."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from camlens.io import Preprocess
from camlens.report import write_report
from camlens.report._paths import ShownPaths
from camlens.report._read import read_folder
from camlens.report._summary import method_summaries
from run_folder import METRICS, make_run_folder

IMAGES = tuple(f"photos/img{i}.jpg" for i in range(7))


class _Tags(HTMLParser):
    """Collect every start tag with its attributes and the text inside each element by id."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())


def _parse(path: Path) -> _Tags:
    page = _Tags()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _rewrite_rows(folder: Path, change) -> list[dict]:  # type: ignore[no-untyped-def]
    path = folder / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for index, row in enumerate(rows):
        change(index, row)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def _weak_and_missing(index: int, row: dict) -> None:
    """Mark some maps near-flat or empty, and leave some metric values out or NaN."""
    spread = 7 * index % 5  # rows alternate between the two methods
    row["status"] = {1: "flat", 2: "empty"}.get(spread, "ok")
    if spread == 3:
        row["metrics"]["deletion_auc"] = float("nan")
    if spread in (0, 4):
        del row["metrics"]["insertion_auc"]


def test_method_summary_equals_numpy_over_the_results_table(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run", IMAGES, metrics=True)
    rows = _rewrite_rows(folder, _weak_and_missing)
    summaries = method_summaries(read_folder(folder).results, ["gradcam", "layercam"], METRICS)
    page = _parse(write_report(folder))
    assert [s.method for s in summaries] == ["gradcam", "layercam"]
    for summary in summaries:
        mine = [r for r in rows if r["method"] == summary.method]
        assert summary.maps == len(mine) == len(IMAGES)
        assert summary.flat == sum(r["status"] == "flat" for r in mine) > 0
        assert summary.empty == sum(r["status"] == "empty" for r in mine) > 0
        for metric, name in zip(summary.metrics, METRICS, strict=True):
            values = np.array([r["metrics"].get(name, np.nan) for r in mine], dtype=np.float64)
            values = values[np.isfinite(values)]
            assert metric.name == name and metric.count == values.size < len(mine)
            assert metric.mean == pytest.approx(np.mean(values), rel=1e-12)
            assert metric.std == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    # The page shows those figures, method by method, metric by metric.
    table_rows = [a for t, a in page.tags if t == "tr" and a.get("data-method")]
    assert [a["data-method"] for a in table_rows] == ["gradcam", "layercam"]
    for stat in ("mean", "std"):
        shown = [
            float(a["data-value"] or "nan")
            for t, a in page.tags
            if t == "td" and a.get("data-stat") == stat
        ]
        expected = [getattr(m, stat) for s in summaries for m in s.metrics]
        assert shown == pytest.approx(expected, rel=1e-12)
    counts = [a for t, a in page.tags if t == "td" and a.get("data-stat") in ("flat", "empty")]
    assert len(counts) == 4


def test_a_metric_with_one_value_has_no_spread_and_none_is_not_zero(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run", IMAGES[:2], methods=("gradcam",), metrics=True)
    _rewrite_rows(folder, lambda i, row: row["metrics"].pop("insertion_auc") if i else None)
    (summary,) = method_summaries(read_folder(folder).results, ["gradcam"], METRICS)
    deletion, insertion = summary.metrics
    assert deletion.count == 2 and deletion.std is not None
    assert insertion.count == 1 and insertion.std is None
    assert (
        insertion.mean
        == json.loads((folder / "results.jsonl").read_text().splitlines()[0])["metrics"][
            "insertion_auc"
        ]
    )
    summaries = method_summaries(read_folder(folder).results, ["gradcam", "absent"], [])
    assert [s.method for s in summaries] == ["gradcam"] and summaries[0].metrics == ()


def _regressor(index: int, row: dict, name: str | None = None) -> None:
    row.update(unit=0, unit_name=name, target="output:0", score_kind="model output")
    row["prediction"] = {"unit": 0, "name": name, "value": 40.0 + 2.25 * index}


@pytest.mark.parametrize("name", [None, "age (years)"])
def test_a_regressors_prediction_reads_as_its_value(tmp_path: Path, name: str | None) -> None:
    folder = make_run_folder(tmp_path / "run", IMAGES[:3], methods=("gradcam",))
    rows = _rewrite_rows(folder, lambda i, row: _regressor(i, row, name))
    page = _parse(write_report(folder))
    text = " ".join(page.text)
    shown = [f"{r['prediction']['value']:.4g}" for r in rows]
    expected = [f"{name}: {v}" if name else f"value {v}" for v in shown]
    for label in expected:
        assert label in page.text
    assert "unit 0" not in text
    if name is None:
        assert page.text.count("output 0") == len(rows)  # each map's label
    # The prediction sort key is the value, numeric, largest first.
    options = [a for t, a in page.tags if t == "option"]
    labels = [t for t in page.text if t in ("Prediction", "Predicted value")]
    assert labels == ["Predicted value"]
    assert options[2]["data-type"] == "num" and options[2]["data-desc"] == "1"
    keys = [a["data-k2"] for t, a in page.tags if t == "tr" and "data-search" in a]
    assert [float(k or "nan") for k in keys] == [r["prediction"]["value"] for r in rows]


def _preprocessing(folder: Path, describe: dict) -> str:
    run = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**run, "preprocess": describe}))
    page = _parse(write_report(folder))
    return page.text[page.text.index("Preprocessing") + 1]


def test_presets_are_described_by_the_range_the_model_gets(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run", IMAGES[:1], methods=("gradcam",))
    black_and_white = [np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)]
    tf = Preprocess(preset="tf", size=(4, 4), layout="NHWC")
    batch = tf(black_and_white)  # what the model gets: the text below must say the same
    assert (batch.min(), batch.max()) == (-1.0, 1.0)
    text = _preprocessing(folder, tf.describe())
    assert "[-1, 1]" in text and "mean" not in text and "std" not in text
    assert text.endswith("4x4 · NHWC")
    # A mean and std of one's own: the range they give, then the numbers.
    own = Preprocess(preset="unit", size=(4, 4), mean=[0.5], std=[0.25], channels=1)
    batch = own([np.zeros((4, 4, 1), np.uint8), np.full((4, 4, 1), 255, np.uint8)])
    text = _preprocessing(folder, own.describe())
    assert f"inputs in [{batch.min():g}, {batch.max():g}]" in text
    assert "mean 0.5" in text and "std 0.25" in text
    # ImageNet's per-channel ranges differ: the preset's own words, not its numbers.
    text = _preprocessing(folder, Preprocess(preset="imagenet").describe())
    assert "0.485" not in text and "[0, 1]" in text
    # An older run.json without scale or summary still reads.
    text = _preprocessing(folder, {"preset": "tf", "mean": [1, 1, 1], "std": [1, 1, 1]})
    assert "[-1, 1]" in text


@pytest.mark.parametrize(
    ("inputs", "image", "shown"),
    [
        (["/data/fundus"], "/data/fundus/left/a.png", "fundus/left/a.png"),
        (["/data/fundus/"], "/data/fundus/a.png", "fundus/a.png"),
        (["/x/y/a.png"], "/x/y/a.png", "a.png"),
        (["/data/eyes/*.jpg"], "/data/eyes/a.jpg", "eyes/a.jpg"),
        (["/data/**/*.jpg"], "/data/eyes/a.jpg", "data/eyes/a.jpg"),
        (["photos"], "photos/cats/a.jpg", "photos/cats/a.jpg"),  # relative: as typed
        (["../photos"], "../photos/a.jpg", "../photos/a.jpg"),
        (["eyes/*.jpg"], "eyes/a.jpg", "eyes/a.jpg"),
        (["C:\\data\\eyes"], "C:\\data\\eyes\\left\\a.png", "eyes/left/a.png"),
        (["https://host/eyes/"], "https://host/eyes/a.jpg", "https://host/eyes/a.jpg"),
        (None, "photos/a.jpg", "photos/a.jpg"),
    ],
)
def test_an_image_is_shown_from_the_input_it_came_from(
    inputs: list[str] | None, image: str, shown: str
) -> None:
    assert ShownPaths(inputs, [image])(image) == shown


def test_absolute_paths_under_no_input_are_shown_from_their_common_folder() -> None:
    images = ["/srv/eyes/left/a.png", "/srv/eyes/right/b.png", "relative/c.png"]
    shown = ShownPaths(None, images)
    assert [shown(i) for i in images] == ["eyes/left/a.png", "eyes/right/b.png", "relative/c.png"]
    assert ShownPaths(["/elsewhere"], ["/a.png"])("/a.png") == "a.png"  # under the root


def test_the_page_never_shows_an_absolute_image_path(tmp_path: Path) -> None:
    root = tmp_path / "given" / "eyes"
    images = [str(root / "left" / "a.jpg"), str(root / "b.jpg")]
    failed = str(root / "broken.jpg")
    folder = make_run_folder(
        tmp_path / "run", images, failures=[(failed, "cannot read it")], methods=("gradcam",)
    )
    run = json.loads((folder / "run.json").read_text())
    run.update(inputs=[str(root)], command=["camlens", "explain", "model.pt"])
    (folder / "run.json").write_text(json.dumps(run))
    html = write_report(folder).read_text(encoding="utf-8")
    assert str(tmp_path) not in html
    page = _parse(folder / "index.html")
    titles = [a["title"] for t, a in page.tags if t == "span" and a.get("class") == "file"]
    assert titles == ["eyes/left/a.jpg", "eyes/b.jpg"]
    assert "eyes/broken.jpg" in page.text


@pytest.mark.parametrize(
    ("factory", "shown"),
    [
        ("/srv/models/net.py:build", "net.py:build"),
        ("C:\\models\\net.py:build", "net.py:build"),
        ("models.zoo:build", "models.zoo:build"),
    ],
)
def test_a_factory_file_is_shown_by_its_name(tmp_path: Path, factory: str, shown: str) -> None:
    folder = make_run_folder(tmp_path / "run", IMAGES[:1], methods=("gradcam",))
    run = json.loads((folder / "run.json").read_text())
    model = f"state dict w.pth + factory {factory}"
    (folder / "run.json").write_text(json.dumps({**run, "model": model}))
    page = _parse(write_report(folder))
    assert page.text[page.text.index("Model") + 1] == f"state dict w.pth + factory {shown}"
