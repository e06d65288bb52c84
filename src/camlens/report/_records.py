"""The lines of an output folder as typed records: one per result, one per image that failed.

`camlens explain` writes them (``results.jsonl``, ``results.csv``, ``failures.jsonl``); resuming
a run and the report read them back. Reading is tolerant: a folder written by an earlier
version, or one still being written, gives records whose missing or malformed fields are None,
and a line that is not a whole JSON object (a torn last line) is skipped and counted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from camlens.report._fields import as_float, as_int

__all__ = ["CSV_COLUMNS", "Failure", "Prediction", "ResultRecord", "read_records"]

#: The columns of ``results.csv``, one row per result record.
CSV_COLUMNS = (
    "image",
    "method",
    "layer",
    "target",
    "rank",
    "unit",
    "unit_name",
    "score",
    "score_kind",
    "predicted_unit",
    "predicted_name",
    "probability",
    "peak_y",
    "peak_x",
    "status",
    "contrast",
    "raw_min",
    "raw_max",
    "positive_share",
    "seconds",
    "overlay",
    "map",
)


@dataclass(frozen=True)
class Prediction:
    """The model's top prediction for an image.

    Attributes:
        unit: The output unit: the top class, or output 0 of a regressor.
        name: The unit's class name, where the model's classes are known.
        value: The unit's output value (a logit, a regressor's value).
        probability: A classifier's softmax probability of the unit; None for a regressor.
    """

    unit: int | None
    name: str | None
    value: float | None = None
    probability: float | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object of the prediction (``value`` and ``probability`` if known)."""
        data: dict[str, Any] = {"unit": self.unit, "name": self.name}
        if self.value is not None:
            data["value"] = self.value
        if self.probability is not None:
            data["probability"] = self.probability
        return data

    @classmethod
    def from_json(cls, data: Any) -> Prediction | None:
        """Return the prediction a JSON value holds; None for anything but a non-empty object."""
        if not isinstance(data, dict) or not data:
            return None
        return cls(
            unit=as_int(data.get("unit")),
            name=_str(data.get("name")),
            value=as_float(data.get("value")),
            probability=as_float(data.get("probability")),
        )


@dataclass(frozen=True)
class ResultRecord:
    """One result: the map of one (image, method, target), its files and what it explains.

    Attributes:
        image: The input image's path, as given (shown as text).
        key: The image's file-name key (:func:`camlens.io.image_key`).
        method: The CAM method.
        layer: The explained layers' names, comma-separated.
        target: The target's description.
        rank: The target's position among the image's targets (its rank for a top-k target).
        targets: The number of targets of the image.
        unit: The explained output unit.
        unit_name: The unit's class name, where the model's classes are known.
        score: The explained score, as the model gave it (before any sign).
        score_kind: What the score was read from (:attr:`camlens.Explanation.score_kind`).
        sign: ``-1`` where the map explains what pushes the score down, else ``1``.
        prediction: The model's top prediction for the image.
        image_file: The picture as shown, relative to the folder.
        overlay: The overlay PNG, relative to the folder.
        map: The grayscale map PNG, relative to the folder.
        arrays: The ``.npz`` of the float map and the raw map, relative to the folder.
        peak: ``(y, x)`` of the map's maximum, in the map's pixels.
        height: The map's height.
        width: The map's width.
        seconds: The explanation's time per image.
        status: ``"ok"``, ``"flat"`` (near-flat: contrast below the threshold) or ``"empty"``
            (no positive evidence): :attr:`camlens.Explanation.strength`.
        contrast: The share of the colour scale the raw map spans when scaled by its maximum.
        raw_min: The raw (signed, layer-resolution) map's minimum, in the layer's units.
        raw_max: Its maximum.
        positive_share: The positive part's share of the raw map's absolute mass.
        metrics: Metric values by name (``deletion_auc``...), or None where none were computed.
    """

    image: str | None
    key: str | None
    method: str | None
    layer: str | None
    target: str | None
    rank: int | None
    targets: int | None
    unit: int | None
    unit_name: str | None
    score: float | None
    score_kind: str | None
    sign: int | None
    prediction: Prediction | None
    image_file: str | None
    overlay: str | None
    map: str | None
    arrays: str | None
    peak: tuple[int, int] | None
    height: int | None
    width: int | None
    seconds: float | None
    status: str | None = None
    contrast: float | None = None
    raw_min: float | None = None
    raw_max: float | None = None
    positive_share: float | None = None
    metrics: Mapping[str, float | None] | None = None

    @property
    def image_id(self) -> str | None:
        """Return what identifies the record's image: its key, or where it has none its path."""
        return self.image if self.key is None else self.key

    @property
    def files(self) -> tuple[str | None, ...]:
        """Return the files the record names: overlay, map, arrays and picture."""
        return (self.overlay, self.map, self.arrays, self.image_file)

    def to_json(self) -> dict[str, Any]:
        """Return the record as the JSON object of its ``results.jsonl`` line.

        ``metrics`` is left out where none were computed.
        """
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["prediction"] = None if self.prediction is None else self.prediction.to_json()
        data["peak"] = None if self.peak is None else list(self.peak)
        if self.metrics is None:
            del data["metrics"]
        else:
            data["metrics"] = dict(self.metrics)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResultRecord:
        """Return the record a ``results.jsonl`` object holds; missing or malformed fields None."""
        peak = data.get("peak")
        metrics = data.get("metrics")
        return cls(
            image=_str(data.get("image")),
            key=_str(data.get("key")),
            method=_str(data.get("method")),
            layer=_str(data.get("layer")),
            target=_str(data.get("target")),
            rank=as_int(data.get("rank")),
            targets=as_int(data.get("targets")),
            unit=as_int(data.get("unit")),
            unit_name=_str(data.get("unit_name")),
            score=as_float(data.get("score")),
            score_kind=_str(data.get("score_kind")),
            sign=as_int(data.get("sign")),
            prediction=Prediction.from_json(data.get("prediction")),
            image_file=_str(data.get("image_file")),
            overlay=_str(data.get("overlay")),
            map=_str(data.get("map")),
            arrays=_str(data.get("arrays")),
            peak=_pair(peak),
            height=as_int(data.get("height")),
            width=as_int(data.get("width")),
            seconds=as_float(data.get("seconds")),
            status=_str(data.get("status")),
            contrast=as_float(data.get("contrast")),
            raw_min=as_float(data.get("raw_min")),
            raw_max=as_float(data.get("raw_max")),
            positive_share=as_float(data.get("positive_share")),
            metrics=(
                {str(name): as_float(value) for name, value in metrics.items()}
                if isinstance(metrics, dict)
                else None
            ),
        )

    def to_csv(self) -> dict[str, Any]:
        """Return the record's ``results.csv`` row, by :data:`CSV_COLUMNS` (None: empty)."""
        prediction = self.prediction or Prediction(unit=None, name=None)
        peak_y, peak_x = self.peak or (None, None)
        return {
            "image": self.image,
            "method": self.method,
            "layer": self.layer,
            "target": self.target,
            "rank": self.rank,
            "unit": self.unit,
            "unit_name": self.unit_name,
            "score": self.score,
            "score_kind": self.score_kind,
            "predicted_unit": prediction.unit,
            "predicted_name": prediction.name,
            "probability": prediction.probability,
            "peak_y": peak_y,
            "peak_x": peak_x,
            "status": self.status,
            "contrast": self.contrast,
            "raw_min": self.raw_min,
            "raw_max": self.raw_max,
            "positive_share": self.positive_share,
            "seconds": self.seconds,
            "overlay": self.overlay,
            "map": self.map,
        }


@dataclass(frozen=True)
class Failure:
    """An image that could not be read or explained.

    Attributes:
        image: The image's path, as given (shown as text).
        error: Why, in one line.
    """

    image: str | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        """Return the failure as the JSON object of its ``failures.jsonl`` line."""
        return {"image": self.image, "error": self.error}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Failure:
        """Return the failure a ``failures.jsonl`` object holds; missing fields None."""
        return cls(image=_str(data.get("image")), error=_str(data.get("error")))


Record = TypeVar("Record", ResultRecord, Failure)


def read_records(path: Path, kind: type[Record]) -> tuple[list[Record], int]:
    """Return the records of a JSONL file, one per line, and how many lines were skipped.

    A line that is not a whole JSON object in UTF-8 (a run interrupted mid-line, or a line being
    written right now) is skipped and counted; blank lines are ignored. A missing file has none.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    records: list[Record] = []
    skipped = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            value = None
        if isinstance(value, dict):
            records.append(kind.from_json(value))
        else:
            skipped += 1
    return records, skipped


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _pair(value: Any) -> tuple[int, int] | None:
    if not isinstance(value, list) or len(value) != 2:
        return None
    y, x = (as_int(v) for v in value)
    return None if y is None or x is None else (y, x)
