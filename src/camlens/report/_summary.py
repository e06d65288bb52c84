"""The report's summaries: a table per method over its maps, and the cohort section."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from camlens.report._fields import as_dict, as_finite, as_int, as_list
from camlens.report._records import ResultRecord

__all__ = [
    "CohortView",
    "MethodSummary",
    "MetricSummary",
    "RegionRow",
    "StabilityRow",
    "Tile",
    "cohort_view",
    "method_summaries",
]


@dataclass(frozen=True)
class MetricSummary:
    """One metric over a method's maps: the maps that have a finite value, their mean and std.

    Attributes:
        name: The metric's name (``deletion_auc``...).
        count: Number of maps with a finite value.
        mean: Their mean; None without any.
        std: Their sample standard deviation (``ddof=1``); None below two values.
    """

    name: str
    count: int
    mean: float | None
    std: float | None


@dataclass(frozen=True)
class MethodSummary:
    """One method's maps in a run.

    Attributes:
        method: The method.
        maps: Number of maps (result rows, every target rank).
        flat: Maps whose status is ``"flat"`` (near-flat: contrast below the threshold).
        empty: Maps whose status is ``"empty"`` (no positive evidence).
        metrics: One summary per metric the run computed, in the page's metric order.
    """

    method: str
    maps: int
    flat: int
    empty: int
    metrics: tuple[MetricSummary, ...]


def method_summaries(
    results: Sequence[ResultRecord], methods: Sequence[str], metric_names: Sequence[str]
) -> list[MethodSummary]:
    """Return one summary per method that has maps, in ``methods``' order.

    A metric value that is missing, NaN or infinite is left out of that metric's figures
    (``count`` says how many remain); it is not counted as zero.
    """
    summaries = []
    for method in methods:
        rows = [row for row in results if row.method == method]
        if not rows:
            continue
        metrics = []
        for name in metric_names:
            values = np.array(
                [
                    v
                    for row in rows
                    if (v := (row.metrics or {}).get(name)) is not None and math.isfinite(v)
                ],
                dtype=np.float64,
            )
            metrics.append(
                MetricSummary(
                    name=name,
                    count=int(values.size),
                    mean=float(values.mean()) if values.size else None,
                    std=float(values.std(ddof=1)) if values.size >= 2 else None,
                )
            )
        summaries.append(
            MethodSummary(
                method=method,
                maps=len(rows),
                flat=sum(row.status == "flat" for row in rows),
                empty=sum(row.status == "empty" for row in rows),
                metrics=tuple(metrics),
            )
        )
    return summaries


@dataclass(frozen=True)
class Tile:
    """One cell of the cohort grid: a group's mean map on the shared colour scale."""

    label: str
    count: int | None
    image: str | None


@dataclass(frozen=True)
class RegionRow:
    """One (group, region) line of the cohort's region table; None where the file lacks it."""

    group: str
    region: str
    mass_share: float | None
    mass_ci: tuple[float, float] | None
    mean_value: float | None
    mean_ci: tuple[float, float] | None
    area_share: float | None


@dataclass(frozen=True)
class StabilityRow:
    """How alike a group's maps are: pixel-wise std (mean, max) and mean pairwise rank corr."""

    group: str
    count: int | None
    mean_std: float | None
    max_std: float | None
    rank_correlation: float | None


@dataclass(frozen=True)
class CohortView:
    """What the report's cohort section shows, read from ``cohort.json``.

    Attributes:
        method: The method whose maps were aggregated.
        by: How images were grouped (``--by``), or None for the whole cohort.
        signed: Whether the signed layer maps were averaged.
        shape: ``(H, W)`` of the common grid, if recorded.
        count: Number of maps in the cohort.
        tiles: The grid's cells: one per group (the whole cohort when not grouped).
        low: The shared colour scale's lowest value (over all tiles' mean maps).
        high: Its highest.
        cmap: The colormap of the tiles.
        regions: The region table, group by group.
        stability: One row per group (the whole cohort first when grouped).
    """

    method: str | None
    by: str | None
    signed: bool
    shape: tuple[int, int] | None
    count: int | None
    tiles: tuple[Tile, ...]
    low: float | None
    high: float | None
    cmap: str | None
    regions: tuple[RegionRow, ...]
    stability: tuple[StabilityRow, ...]


def cohort_view(
    data: dict[str, Any],
    results: Sequence[ResultRecord],
    url: Callable[[str], str | None],
    notes: list[str],
) -> CohortView:
    """Return the cohort section's values from ``cohort.json``'s object.

    Every figure is read tolerantly (a missing or non-numeric one is None). When the folder now
    holds another number of maps of the cohort's method than the cohort counted (a run resumed
    after ``camlens cohort``), a note says to run it again.

    Args:
        data: ``cohort.json``'s object.
        results: The folder's result rows.
        url: Turns a path in the folder into the page's relative URL, or None where it is
            missing or outside the folder.
        notes: The page's notes, appended to.
    """
    overall = as_dict(data.get("overall"))
    groups = [as_dict(g) for g in as_list(data.get("groups"))]
    shown = groups or [overall]
    grid = as_dict(data.get("grid"))
    images = as_list(grid.get("images"))
    tiles = tuple(
        Tile(
            label=_label(g),
            count=as_int(g.get("count")),
            image=url(images[i]) if i < len(images) and isinstance(images[i], str) else None,
        )
        for i, g in enumerate(shown)
    )
    scale = as_list(grid.get("scale"))
    low = as_finite(scale[0]) if len(scale) == 2 else None
    high = as_finite(scale[1]) if len(scale) == 2 else None
    method = data.get("method") if isinstance(data.get("method"), str) else None
    count = as_int(overall.get("count"))
    if method is not None and count is not None:
        now = sum(1 for r in results if r.method == method and (r.rank or 0) == 0 and r.arrays)
        if now != count:
            notes.append(
                f"the cohort section covers {count} {method} maps but the folder now holds "
                f"{now}: run `camlens cohort` again"
            )
    shape = as_list(data.get("shape"))
    return CohortView(
        method=method,
        by=data.get("by") if isinstance(data.get("by"), str) else None,
        signed=data.get("signed") is True,
        shape=(int(shape[0]), int(shape[1])) if len(shape) == 2 and _ints(shape) else None,
        count=count,
        tiles=tiles,
        low=low,
        high=high,
        cmap=grid.get("cmap") if isinstance(grid.get("cmap"), str) else None,
        regions=tuple(
            RegionRow(
                group=_label(g),
                region=str(r.get("name", "—")),
                mass_share=as_finite(r.get("mass_share")),
                mass_ci=_pair(r.get("mass_ci")),
                mean_value=as_finite(r.get("mean_value")),
                mean_ci=_pair(r.get("mean_ci")),
                area_share=as_finite(r.get("area_share")),
            )
            for g in shown
            for r in (as_dict(item) for item in as_list(g.get("regions")))
        ),
        stability=tuple(
            StabilityRow(
                group=_label(g),
                count=as_int(g.get("count")),
                mean_std=as_finite(g.get("mean_std")),
                max_std=as_finite(g.get("max_std")),
                rank_correlation=as_finite(g.get("rank_correlation")),
            )
            for g in ([overall, *groups] if groups else [overall])
        ),
    )


def _label(group: dict[str, Any]) -> str:
    label = group.get("label")
    return "—" if label is None else str(label)


def _ints(values: list[Any]) -> bool:
    return all(as_int(v) is not None for v in values)


def _pair(value: Any) -> tuple[float, float] | None:
    items = as_list(value)
    if len(items) != 2:
        return None
    low, high = as_finite(items[0]), as_finite(items[1])
    return None if low is None or high is None else (low, high)
