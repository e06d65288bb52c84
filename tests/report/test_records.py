"""The output folder's typed lines: exact round trips, older folders, torn lines, CSV rows."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from camlens.report._records import (
    CSV_COLUMNS,
    Failure,
    Prediction,
    ResultRecord,
    read_records,
)

#: A results.jsonl line as `camlens explain` writes it (keys in their order).
LINE = {
    "image": "in/cat ü.jpg",
    "key": "cat_u-0123456789",
    "method": "gradcam++",
    "layer": "features",
    "target": "top-2 classes",
    "rank": 1,
    "targets": 2,
    "unit": 282,
    "unit_name": None,
    "score": 15.431821823120117,
    "score_kind": "model output",
    "sign": -1,
    "prediction": {"unit": 285, "name": "Egyptian cat", "value": 15.5, "probability": 0.86},
    "image_file": "images/cat_u-0123456789.jpg",
    "overlay": "overlays/cat_u-0123456789__gradcam++__t1.png",
    "map": "maps/cat_u-0123456789__gradcam++__t1.png",
    "arrays": "arrays/cat_u-0123456789__gradcam++__t1.npz",
    "peak": [143, 80],
    "height": 224,
    "width": 224,
    "seconds": 0.366011,
    "status": "flat",
    "contrast": 0.004812,
    "raw_min": 0.000577,
    "raw_max": 0.00058,
    "positive_share": 1.0,
    "metrics": {"deletion_auc": 0.06, "insertion_auc": 0.44},
}


def test_a_written_line_reads_back_to_the_same_line() -> None:
    record = ResultRecord.from_json(LINE)
    assert record.prediction == Prediction(
        unit=285, name="Egyptian cat", value=15.5, probability=0.86
    )
    assert record.peak == (143, 80) and record.image_id == "cat_u-0123456789"
    assert json.dumps(record.to_json()) == json.dumps(LINE)  # same keys, same order
    assert ResultRecord.from_json(record.to_json()) == record


def test_a_regressor_and_a_run_without_metrics_leave_their_keys_out() -> None:
    line = {k: v for k, v in LINE.items() if k != "metrics"}
    line["prediction"] = {"unit": 0, "name": None, "value": 31.5}
    record = ResultRecord.from_json(line)
    assert record.metrics is None and record.prediction is not None
    assert record.prediction.probability is None
    assert record.to_json() == line


def test_an_older_or_partial_line_reads_with_its_gaps_as_none() -> None:
    old = {"image": "a.jpg", "method": "gradcam", "score": 10, "prediction": {"probability": 0.5}}
    old |= {"peak": [1, "x"], "rank": True, "height": 2.5, "metrics": {"deletion_auc": "n/a"}}
    record = ResultRecord.from_json(old)
    assert record.image_id == "a.jpg"  # no key: the path identifies the image
    assert record.score == 10.0 and isinstance(record.score, float)
    assert record.prediction == Prediction(unit=None, name=None, probability=0.5)
    assert record.peak is None and record.rank is None and record.height is None
    assert record.status is None and record.contrast is None  # written before map strength
    assert record.metrics == {"deletion_auc": None}
    assert record.files == (None, None, None, None)
    assert ResultRecord.from_json({"prediction": {}}).prediction is None


def test_read_records_skips_and_counts_what_is_not_a_whole_object(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    assert read_records(path, ResultRecord) == ([], 0)  # no file yet
    torn = json.dumps(LINE)[:40]
    path.write_bytes(
        (json.dumps(LINE) + "\n\n[1, 2]\n" + json.dumps(LINE) + "\n").encode() + b"\xc3\n"
        + torn.encode()
    )  # fmt: skip
    records, skipped = read_records(path, ResultRecord)
    assert [r.to_json() for r in records] == [LINE, LINE]
    assert skipped == 3  # the list, the bad UTF-8 and the torn last line; blank lines ignored


def test_failures_round_trip(tmp_path: Path) -> None:
    failure = Failure(image="in/b.jpg", error="in/b.jpg: the file is empty (0 bytes)")
    path = tmp_path / "failures.jsonl"
    path.write_text(json.dumps(failure.to_json()) + "\n" + '{"image": 3}\n')
    assert read_records(path, Failure) == ([failure, Failure(image=None, error=None)], 0)


def test_csv_row_has_the_tables_columns() -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, CSV_COLUMNS)
    writer.writeheader()
    writer.writerow(ResultRecord.from_json(LINE).to_csv())
    writer.writerow(ResultRecord.from_json({"image": "a.jpg"}).to_csv())
    full, empty = csv.DictReader(io.StringIO(text.getvalue()))
    assert full["predicted_unit"] == "285" and full["probability"] == "0.86"
    assert (full["peak_y"], full["peak_x"]) == ("143", "80") and full["unit_name"] == ""
    assert full["score"] == "15.431821823120117" and full["rank"] == "1"
    assert (full["status"], full["contrast"], full["raw_max"]) == ("flat", "0.004812", "0.00058")
    assert empty["image"] == "a.jpg" and set(empty.values()) == {"a.jpg", ""}
