"""Running several methods through several metrics, into one table."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from camlens.errors import BadInputError
from camlens.explainer import Explainer
from camlens.methods import Method
from camlens.methods.perturbation import Progress
from camlens.metrics.faithfulness import confidence, deletion, insertion, road
from camlens.metrics.localisation import pointing_game
from camlens.targets import TargetLike

METRICS = ("deletion", "insertion", "average_drop", "increase", "win", "road", "pointing")


@dataclass(frozen=True, eq=False)
class Table:
    """A methods x metrics table: one row per method, values averaged over the explained rows."""

    columns: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]

    def to_csv(self) -> str:
        """Return the table as CSV text."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(self.columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()

    def to_markdown(self) -> str:
        """Return the table as a Markdown table, numbers to 4 significant digits."""

        def cell(value: Any) -> str:
            return f"{value:.4g}" if isinstance(value, float) else str(value)

        lines = [
            "| " + " | ".join(self.columns) + " |",
            "|" + "|".join("---" if c == "method" else "---:" for c in self.columns) + "|",
        ]
        lines += ["| " + " | ".join(cell(r[c]) for c in self.columns) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"


def compare(
    model: Any,
    inputs: Any,
    methods: Sequence[str | Method],
    *,
    layer: Any = None,
    target: TargetLike = None,
    metrics: Sequence[str] = ("deletion", "insertion", "average_drop", "road", "pointing"),
    boxes: Any = None,
    region: np.ndarray | None = None,
    steps: int = 20,
    batch_size: int | None = None,
    progress: Progress | None = None,
    **explainer_options: Any,
) -> Table:
    """Explain ``inputs`` with each method and score every map with each metric.

    Columns: ``deletion_auc`` (lower is better), ``insertion_auc``, ``average_drop`` (%,
    lower), ``increase`` (increase in confidence, %), ``win`` (% of rows where the method has
    the lowest drop, Chattopadhay et al.), ``road_combined`` (higher), ``pointing`` (pointing
    game accuracy, needs ``boxes``) and ``energy`` (energy-based pointing game).

    Args:
        methods: Registry names or method objects.
        metrics: Which of ``deletion``, ``insertion``, ``average_drop``, ``increase``,
            ``win``, ``road``, ``pointing``.
        boxes: One ``[y0, x0, y1, x1]`` box (or an ``(N, H, W)`` mask) per image, for pointing.
        progress: Called as ``progress(done, total)`` after each method.
        layer, target, region, steps, batch_size, **explainer_options: Passed on.
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise BadInputError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    if "pointing" in metrics and boxes is None:
        raise BadInputError("the pointing game needs boxes= (one per image) or object masks")
    results: list[dict[str, Any]] = []
    drops: list[np.ndarray] = []
    for index, method in enumerate(methods):
        explainer = Explainer(model, layer, method=method, **explainer_options)
        exp = explainer(inputs, target)
        row: dict[str, Any] = {"method": exp.method}
        options: dict[str, Any] = {"region": region, "batch_size": batch_size}
        if "deletion" in metrics:
            row["deletion_auc"] = float(
                deletion(model, inputs, exp, steps=steps, **options).auc.mean()
            )
        if "insertion" in metrics:
            row["insertion_auc"] = float(
                insertion(model, inputs, exp, steps=steps, **options).auc.mean()
            )
        if {"average_drop", "increase", "win"} & set(metrics):
            conf = confidence(model, inputs, exp, **options)
            drops.append(conf.drop)
            if "average_drop" in metrics:
                row["average_drop"] = conf.average_drop
            if "increase" in metrics:
                row["increase"] = conf.increase_in_confidence
        if "road" in metrics:
            row["road_combined"] = float(road(model, inputs, exp, **options).combined.mean())
        if "pointing" in metrics:
            pointing = pointing_game(exp, boxes)
            row["pointing"] = pointing.accuracy
            row["energy"] = pointing.mean_energy
        results.append(row)
        if progress is not None:
            progress(index + 1, len(methods))
    if "win" in metrics:
        best = np.stack(drops).argmin(axis=0)
        for i, row in enumerate(results):
            row["win"] = float(100 * (best == i).mean())
    columns = tuple(dict.fromkeys(k for row in results for k in row))
    return Table(columns=columns, rows=tuple(results))
