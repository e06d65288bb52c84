"""Turn a run folder into the values the HTML template shows, and render it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import jinja2
import numpy as np

from camlens.errors import CamlensError
from camlens.io import PRESETS
from camlens.render import colorize
from camlens.report._fields import as_dict, as_float, as_list
from camlens.report._paths import ShownPaths
from camlens.report._read import RunFolder
from camlens.report._records import Prediction, ResultRecord
from camlens.report._summary import cohort_view, method_summaries

__all__ = ["render_html"]

#: Colours sampled from the colormap for the CSS colour bar (enough for jet's sharp bends).
_COLORBAR_STOPS = 33


@dataclass(frozen=True)
class SortKey:
    """One entry of the page's sort menu; rows carry its value as ``data-k<index>``."""

    label: str
    numeric: bool
    descending: bool


@dataclass(frozen=True)
class Target:
    """One map in a method's cell: the overlay and what it explains."""

    rank: int | None
    overlay: str | None
    map: str | None
    label: str
    target: str
    score: str
    metrics: list[tuple[str, str]]
    tooltip: str
    status: str
    strength: str


@dataclass(frozen=True)
class ImageRow:
    """One row of the grid: an input image and its maps, one cell per method."""

    image: str
    folder: str
    name: str
    thumbnail: str | None
    width: int | None
    height: int | None
    prediction: str
    probability: str
    cells: list[tuple[str, list[Target]]]
    search: str
    sort_values: list[str | None]


def render_html(folder: RunFolder, title: str | None) -> str:
    """Return the report page for ``folder`` as an HTML string."""
    run = folder.run
    methods = _methods(run, folder.results)
    metric_names = _unique(name for row in folder.results for name in row.metrics or {})
    regression = _all_regressions(folder.results)
    sort_keys = _sort_keys(methods, metric_names, regression)
    shown = ShownPaths(
        run.get("inputs"),
        [_text(r.image) for r in folder.results] + [_text(f.image) for f in folder.failures],
    )
    rows = _image_rows(folder, methods, metric_names, shown, regression)
    notes = list(folder.notes)
    cohort = None
    if folder.cohort is not None:
        cohort = cohort_view(
            folder.cohort, folder.results, lambda p: _relative_url(folder.path, p), notes
        )
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("camlens.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["number"] = _number
    env.filters["percent"] = _percent
    env.filters["exact"] = _exact
    template = env.get_template("report.html.j2")
    return template.render(
        title=title or "camlens report",
        settings=_settings(run, methods, folder.results),
        command=" ".join(str(arg) for arg in as_list(run.get("command"))),
        colorbar=_colorbar(run.get("cmap")),
        cmap=_text(run.get("cmap")),
        version=_text(run.get("camlens_version")),
        methods=methods,
        sort_keys=sort_keys,
        rows=rows,
        map_count=len(folder.results),
        failures=[(shown(_text(f.image)), _text(f.error)) for f in folder.failures],
        compare=folder.compare,
        summaries=method_summaries(folder.results, methods, metric_names),
        metric_labels=[_metric_label(name) for name in metric_names],
        cohort=cohort,
        cohort_colorbar=None if cohort is None else _colorbar(cohort.cmap),
        notes=notes,
    )


def _methods(run: dict[str, Any], results: list[ResultRecord]) -> list[str]:
    """Return the run's methods in its order, then any others the results hold."""
    declared = [str(m) for m in as_list(run.get("methods"))]
    return _unique([*declared, *(str(row.method) for row in results)])


def _sort_keys(methods: list[str], metric_names: list[str], regression: bool) -> list[SortKey]:
    keys = [
        SortKey("Run order", numeric=True, descending=False),
        SortKey("Image name", numeric=False, descending=False),
        (
            SortKey("Predicted value", numeric=True, descending=True)
            if regression
            else SortKey("Prediction", numeric=False, descending=False)
        ),
        SortKey("Probability", numeric=True, descending=True),
    ]
    for method in methods:
        keys.append(SortKey(f"Score · {method}", numeric=True, descending=True))
        keys.extend(
            SortKey(f"{_metric_label(name)} · {method}", numeric=True, descending=True)
            for name in metric_names
        )
    return keys


def _image_rows(
    folder: RunFolder,
    methods: list[str],
    metrics: list[str],
    shown: ShownPaths,
    regression: bool,
) -> list[ImageRow]:
    """Group the result rows by image, in the order the images were first written.

    Image paths are shown relative to the inputs given (``shown``); with ``regression`` (every
    prediction a regressor's value) the prediction sort key is the value, not its text.
    """
    by_image: dict[str, list[ResultRecord]] = {}
    for row in folder.results:
        by_image.setdefault(_text(row.image_id), []).append(row)
    image_rows = []
    for order, results in enumerate(by_image.values()):
        first = results[0]
        prediction = first.prediction
        pred_name = "" if prediction is None else _prediction_label(prediction)
        probability = None if prediction is None else _finite(prediction.probability)
        cells = [
            (
                m,
                sorted(
                    (_target(folder.path, r, metrics) for r in results if r.method == m),
                    key=lambda t: -1 if t.rank is None else t.rank,
                ),
            )
            for m in methods
        ]
        image = shown(_text(first.image))
        if regression:
            predicted = _repr(None if prediction is None else _finite(prediction.value))
        else:
            predicted = pred_name.lower() if prediction else None
        sort_values: list[str | None] = [str(order), image.lower(), predicted, _repr(probability)]
        for m in methods:
            top = next((r for r in results if r.method == m and r.rank in (0, None)), None)
            sort_values.append(_repr(_finite(None if top is None else top.score)))
            values = {} if top is None or top.metrics is None else top.metrics
            sort_values.extend(_repr(_finite(values.get(name))) for name in metrics)
        cut = max(image.rfind("/"), image.rfind("\\")) + 1  # show the folder apart, muted
        folder_part, name_part = image[:cut], image[cut:]
        words = [image, pred_name]
        words += [t.label for _, cell in cells for t in cell]
        image_rows.append(
            ImageRow(
                image=image,
                folder=folder_part,
                name=name_part,
                thumbnail=_relative_url(folder.path, first.image_file),
                width=_positive(first.width),
                height=_positive(first.height),
                prediction=pred_name,
                probability="" if probability is None else f"{probability:.1%}",
                cells=cells,
                search=" ".join(_unique(words)).lower(),
                sort_values=sort_values,
            )
        )
    return image_rows


def _target(folder: Path, row: ResultRecord, metric_names: list[str]) -> Target:
    values = row.metrics or {}
    score = _finite(row.score)
    kind = _text(row.score_kind, "score")
    tooltip = [f"target {_text(row.target)}", f"layer {_text(row.layer)}"]
    if row.peak is not None:
        tooltip.append(f"peak at (y={row.peak[0]}, x={row.peak[1]})")
    seconds = _finite(row.seconds)
    if seconds is not None:
        tooltip.append(f"{seconds:.3g} s")
    raw_min, raw_max, contrast = _finite(row.raw_min), _finite(row.raw_max), _finite(row.contrast)
    if raw_min is not None and raw_max is not None:
        tooltip.append(f"raw map {_number(raw_min)} to {_number(raw_max)}")
    if contrast is not None:
        tooltip.append(f"contrast {contrast:.1%}")
    return Target(
        rank=row.rank,
        overlay=_relative_url(folder, row.overlay),
        map=_relative_url(folder, row.map),
        label=_unit_label(row.unit_name, row.unit, output=_is_regression(row.prediction)),
        target=_text(row.target),
        score="" if score is None else f"{kind} {_number(score)}",
        metrics=[
            (_metric_label(name), _number(values[name])) for name in metric_names if name in values
        ],
        tooltip=" · ".join(tooltip),
        status=row.status if row.status in _STRENGTH_LABELS else "ok",
        strength=_STRENGTH_LABELS.get(row.status or "", ""),
    )


#: The badge a weak map gets under its overlay (an "ok" map gets none).
_STRENGTH_LABELS = {
    "flat": "near-flat map",
    "empty": "empty map: no positive evidence",
}


#: The folders in front of a file name in a model's description (a ``path/to/file.py:build``
#: factory): the report shows the file's name, as it does for the model file itself.
_FOLDERS_OF_A_FILE = re.compile(r"(?<!\S)(?:[A-Za-z]:)?[^\s:]*[/\\](?=[^\s/\\]+\.py:)")


_SCALING = {
    "minmax": "min-max (each map over the whole colour scale)",
    "max": "divided by the maximum",
    "none": "raw values, clipped to [0, 1]",
}


def _settings(
    run: dict[str, Any], methods: list[str], results: list[ResultRecord]
) -> list[tuple[str, str]]:
    """Return the run settings shown in the header, as (label, value) pairs."""
    layer = _text(run.get("layer"))
    resolved = _unique(row.layer for row in results if row.layer)
    if resolved and resolved != [layer]:  # e.g. "auto" and the layer it picked
        layer = f"{layer} → {', '.join(resolved)}"
    framework = {"torch": "PyTorch", "keras": "Keras"}.get(str(run.get("framework")), "")
    settings = [
        ("Model", _FOLDERS_OF_A_FILE.sub("", _text(run.get("model")))),
        ("Framework", framework or _text(run.get("framework"))),
        ("Layer", layer),
        ("Target", _text(run.get("target"))),
        ("Methods", ", ".join(methods) or "—"),
        ("Preprocessing", _preprocessing(as_dict(run.get("preprocess")))),
        ("Overlay", f"{_text(run.get('cmap'))}, alpha {_number(run.get('alpha'))}"),
        ("Scaling", _SCALING.get(str(run.get("normalize", "minmax")), _text(run.get("normalize")))),
        ("Region", _region(run.get("region"))),
        ("camlens", _text(run.get("camlens_version"))),
        ("Started", _date(run.get("started"))),
    ]
    return settings


def _region(region: Any) -> str:
    """Return how the run's region of interest is described in the header."""
    if region is None:
        return "whole images"
    if region == "auto-fov":
        return "auto-fov (each image's circular field of view; grey outside)"
    return f"mask {_text(region)} (grey outside)"


def _preprocessing(pre: dict[str, Any]) -> str:
    """Return the preprocessing as text: the preset and what its inputs are, size, layout.

    A preset with its own mean and std is described by what the model gets (``tf``: "RGB in
    [-1, 1]"), not by those numbers, which are in the preset's scaled units (``tf``'s mean 1,
    std 1 are of pixels scaled to [0, 2]). A mean or std of the user's own is shown with the
    input range it gives, where every channel has the same.
    """
    preset = pre.get("preset")
    known = PRESETS.get(preset) if isinstance(preset, str) else None
    mean, std = _floats(pre.get("mean")), _floats(pre.get("std"))
    parts = [_text(preset, "")]
    if known is not None and _same(mean, known.mean) and _same(std, known.std):
        parts.append(known.summary)
    elif mean or std:
        scale = _finite(as_float(pre.get("scale")))
        if scale is None and known is not None:
            scale = known.scale
        default_mean, default_std = (known.mean, known.std) if known else ((0.0,), (1.0,))
        bounds = _input_range(scale, mean or list(default_mean), std or list(default_std))
        if bounds is not None:
            parts.append(f"inputs in [{_number(bounds[0])}, {_number(bounds[1])}]")
        for name, values in (("mean", mean), ("std", std)):
            if values:
                parts.append(f"{name} " + ", ".join(_number(v) for v in values))
    order = pre.get("channel_order")
    if known is not None and isinstance(order, str) and order != known.order:
        parts.append(order)
    size = as_list(pre.get("size"))
    if len(size) == 2:
        parts.append(f"{size[0]}x{size[1]}")
    if pre.get("layout"):
        parts.append(_text(pre.get("layout")))
    return " · ".join(p for p in parts if p) or "—"


def _same(values: list[float] | None, preset: tuple[float, ...]) -> bool:
    """Return whether recorded values are a preset's (one value: the preset's channel mean)."""
    if values is None:
        return True  # not recorded: the preset's
    expected = [sum(preset) / len(preset)] if len(values) == 1 else list(preset)
    return len(values) == len(expected) and bool(np.allclose(values, expected, rtol=1e-6))


def _input_range(
    scale: float | None, mean: list[float], std: list[float]
) -> tuple[float, float] | None:
    """Return the model input's range for pixels 0..255, where every channel has the same."""
    if scale is None or (len(mean) != len(std) and 1 not in (len(mean), len(std))):
        return None
    m, s = np.broadcast_arrays(np.asarray(mean), np.asarray(std))
    if (s == 0).any():
        return None
    ends = np.sort(np.stack([(0.0 - m) / s, (255.0 * scale - m) / s]), axis=0)
    if not (np.allclose(ends[0], ends[0][0]) and np.allclose(ends[1], ends[1][0])):
        return None
    return float(ends[0][0]), float(ends[1][0])


def _colorbar(cmap: Any) -> str | None:
    """Return a CSS ``linear-gradient`` of the colormap, or None if it is not a known colormap."""
    if not isinstance(cmap, str):
        return None
    try:
        colours = colorize(np.linspace(0.0, 1.0, _COLORBAR_STOPS)[None, :], cmap)[0]
    except CamlensError:
        return None
    last = _COLORBAR_STOPS - 1
    stops = ", ".join(
        f"rgb({r}, {g}, {b}) {100 * i / last:.4g}%" for i, (r, g, b) in enumerate(colours.tolist())
    )
    return f"linear-gradient(to right, {stops})"


def _relative_url(folder: Path, path: str | None) -> str | None:
    """Return a percent-encoded relative URL to a file inside ``folder``, or None.

    None when the path is not a relative path inside the folder (absolute, ``..``, a URL) or the
    file is missing, so the page shows a placeholder instead of a broken image.
    """
    if not path:
        return None
    posix = PurePosixPath(path.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or ":" in posix.parts[0]:
        return None
    if not (folder / posix).is_file():
        return None
    return quote(posix.as_posix())


def _is_regression(prediction: Prediction | None) -> bool:
    """Return whether a prediction is a regressor's: a value with no class probability."""
    return (
        prediction is not None and prediction.probability is None and prediction.value is not None
    )


def _all_regressions(results: list[ResultRecord]) -> bool:
    """Return whether every recorded prediction is a regressor's (and there is one)."""
    predictions = [row.prediction for row in results if row.prediction is not None]
    return bool(predictions) and all(_is_regression(p) for p in predictions)


def _prediction_label(prediction: Prediction) -> str:
    """Return a classifier's class, or a regressor's value in its units (its output's name).

    A regressor's output named ``age (years)`` (a classes file naming output 0) predicting 57.25
    reads ``age (years): 57.25``; unnamed, ``value 57.25``. Never ``unit 0``.
    """
    if _is_regression(prediction):
        value = _number(prediction.value)
        return f"{prediction.name}: {value}" if prediction.name else f"value {value}"
    return _unit_label(prediction.name, prediction.unit)


def _unit_label(name: str | None, unit: int | None, *, output: bool = False) -> str:
    """Return the unit's name, else ``unit I`` (``output I`` for a regressor's output)."""
    if name:
        return name
    return "—" if unit is None else f"{'output' if output else 'unit'} {unit}"


def _metric_label(name: str) -> str:
    return " ".join("AUC" if word == "auc" else word for word in name.split("_"))


def _date(value: Any) -> str:
    """Return an ISO time as ``YYYY-MM-DD HH:MM`` (with its UTC offset), or as given."""
    text = _text(value)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return text
    offset = when.strftime("%z")
    if offset:
        offset = " UTC" if offset == "+0000" else f" UTC{offset[:3]}:{offset[3:]}"
    return when.strftime("%Y-%m-%d %H:%M") + offset


def _number(value: Any) -> str:
    """Format a number with 4 significant digits (NaN and infinities as a dash); else as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _text(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if math.isfinite(value) else "—"


def _floats(value: Any) -> list[float] | None:
    """Return a list of numbers as floats; None where it is missing or holds anything else."""
    items = as_list(value)
    numbers = [as_float(v) for v in items]
    if not items or any(n is None for n in numbers):
        return None
    return [float(n) for n in numbers if n is not None]


def _percent(value: float | None) -> str:
    """Format a share as a percentage with one decimal (None as a dash)."""
    return "—" if value is None else f"{100 * value:.1f} %"


def _exact(value: float | None) -> str:
    """Return a number's shortest exact text for a data attribute ("" for None)."""
    return "" if value is None else repr(value)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _repr(value: float | None) -> str | None:
    return None if value is None else repr(value)


def _positive(value: int | None) -> int | None:
    return value if value is not None and value > 0 else None


def _text(value: Any, default: str = "—") -> str:
    return default if value is None or value == "" else str(value)


def _unique(items: Any) -> list[str]:
    return list(dict.fromkeys(items))
