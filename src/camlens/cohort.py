"""Cohort analysis: maps aggregated over many images (pure NumPy, no framework).

Images are assumed aligned (the same anatomy at the same place in every picture, as with
fundus photos centred by the camera): maps are brought to one grid and averaged pixel by
pixel. Maps come from arrays or from an ``camlens explain`` output folder (its
``arrays/<key>__<method>.npz`` files: ``map`` in [0, 1] at input size, ``raw`` the signed
layer map), so nothing is recomputed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from camlens.errors import BadInputError
from camlens.report._records import ResultRecord, read_records

__all__ = [
    "CohortResult",
    "GroupSummary",
    "RegionStat",
    "assign_bins",
    "cohort",
    "load_folder",
    "rank_correlation",
    "tta_stability",
]


@dataclass(frozen=True)
class RegionStat:
    """One named region's statistics over a group's images.

    Attributes:
        name: The region's name.
        mass_share: Mean over images of the share of map mass inside the region.
        mass_ci: Bootstrap 95% interval of ``mass_share`` over images.
        mean_value: Mean over images of the map's mean inside the region.
        mean_ci: Bootstrap 95% interval of ``mean_value``.
        area_share: Share of the grid the region covers (mass share of a uniform map).
    """

    name: str
    mass_share: float
    mass_ci: tuple[float, float]
    mean_value: float
    mean_ci: tuple[float, float]
    area_share: float


@dataclass(frozen=True)
class GroupSummary:
    """The maps of one group of images, aggregated.

    Attributes:
        label: The group's label (``"all"`` for the whole cohort).
        count: Number of images.
        mean: Pixel-wise mean map.
        median: Pixel-wise median map.
        std: Pixel-wise standard deviation across images.
        rank_correlation: Mean pairwise Spearman correlation between the images' maps.
        regions: Per-region statistics, in the order the regions were given.
    """

    label: str
    count: int
    mean: np.ndarray
    median: np.ndarray
    std: np.ndarray
    rank_correlation: float
    regions: tuple[RegionStat, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return the summary's figures (not its maps) as a JSON object."""
        return {
            "label": self.label,
            "count": self.count,
            "mean_std": float(self.std.mean()),
            "max_std": float(self.std.max()),
            "rank_correlation": self.rank_correlation,
            "regions": [
                {
                    "name": r.name,
                    "mass_share": r.mass_share,
                    "mass_ci": list(r.mass_ci),
                    "mean_value": r.mean_value,
                    "mean_ci": list(r.mean_ci),
                    "area_share": r.area_share,
                }
                for r in self.regions
            ],
        }


@dataclass(frozen=True)
class CohortResult:
    """What :func:`cohort` finds.

    Attributes:
        overall: All images together.
        groups: One summary per group, in sorted label order (empty when not grouped).
        shape: ``(H, W)`` of the common grid.
    """

    overall: GroupSummary
    groups: tuple[GroupSummary, ...] = field(default_factory=tuple)
    shape: tuple[int, int] = (0, 0)

    def to_json(self) -> dict[str, Any]:
        """Return the result's figures as a JSON object (what ``cohort.json`` holds)."""
        return {
            "shape": list(self.shape),
            "overall": self.overall.to_json(),
            "groups": [g.to_json() for g in self.groups],
        }


def _resize(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D map (pixel centres aligned), NumPy only."""
    h, w = array.shape
    if (h, w) == tuple(shape):
        return array.astype(np.float64)
    ys = np.clip((np.arange(shape[0]) + 0.5) * h / shape[0] - 0.5, 0, h - 1)
    xs = np.clip((np.arange(shape[1]) + 0.5) * w / shape[1] - 0.5, 0, w - 1)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = array.astype(np.float64)
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bottom = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return np.asarray(top * (1 - fy) + bottom * fy)


def _stack(maps: np.ndarray | Sequence[np.ndarray], shape: tuple[int, int] | None) -> np.ndarray:
    if isinstance(maps, np.ndarray) and maps.ndim == 3:
        # float32 maps stay float32: half the memory traffic over 10,000 maps. Narrower floats
        # (the float16 maps an explain run saves) widen to float32, so means and stds are not
        # rounded to 3 significant digits.
        if maps.dtype.kind != "f":
            stack = maps.astype(np.float64)
        else:
            stack = maps if maps.dtype.itemsize >= 4 else maps.astype(np.float32)
        if shape is not None and stack.shape[1:] != tuple(shape):
            stack = np.stack([_resize(m, shape) for m in stack])
    else:
        items = [np.asarray(m) for m in maps]
        if not items or any(m.ndim != 2 for m in items):
            raise BadInputError("cohort needs a non-empty list of 2-D maps or an (N, H, W) array.")
        target = shape or max((m.shape for m in items), key=lambda s: s[0] * s[1])
        stack = np.stack([_resize(m, (int(target[0]), int(target[1]))) for m in items])
    if stack.shape[0] == 0:
        raise BadInputError("cohort needs at least one map.")
    if not np.isfinite(stack).all():
        raise BadInputError("cohort maps hold NaN or infinite values; drop those images first.")
    return stack


def rank_correlation(maps: np.ndarray, *, max_maps: int = 256, seed: int = 0) -> float:
    """Return the mean pairwise Spearman rank correlation between maps ``(N, H, W)``.

    Above ``max_maps`` maps, a seeded random sample of ``max_maps`` is used (the mean over
    pairs is estimated, not exhausted). Constant maps count as uncorrelated (0). NaN below 2 maps.

    Args:
        maps: ``(N, H, W)`` maps.
        max_maps: Most maps to compare pairwise.
        seed: Seed of the sample.
    """
    n = maps.shape[0]
    if n < 2:
        return float("nan")
    if n > max_maps:
        pick = np.random.default_rng(seed).choice(n, size=max_maps, replace=False)
        maps = maps[pick]
        n = max_maps
    flat = maps.reshape(n, -1)
    ranks = flat.argsort(axis=1).argsort(axis=1).astype(np.float64)
    # Ties: average ranks so that constant regions do not create false order.
    for i in range(n):
        _, inverse, counts = np.unique(flat[i], return_inverse=True, return_counts=True)
        if counts.max() > 1:
            ends = np.cumsum(counts)
            ranks[i] = ((ends - counts + ends - 1) / 2.0)[inverse]
    ranks -= ranks.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(ranks, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    z = ranks / safe[:, None]
    corr = z @ z.T
    off = corr[~np.eye(n, dtype=bool)]
    return float(off.mean())


def _bootstrap(values: np.ndarray, resample: np.ndarray | None) -> tuple[float, float]:
    """Return the percentile 95% interval of the mean of ``values`` over resampled images."""
    if resample is None:
        v = float(values.mean())
        return (v, v)
    means = values[resample].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(low), float(high))


def _region_masks(
    regions: Mapping[str, np.ndarray | tuple[int, int, int, int]], shape: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Return named bool masks from masks or ``(y0, x0, y1, x1)`` boxes (end exclusive)."""
    masks: dict[str, np.ndarray] = {}
    for name, spec in regions.items():
        if isinstance(spec, tuple | list) and len(spec) == 4:
            y0, x0, y1, x1 = (int(v) for v in spec)
            mask = np.zeros(shape, dtype=bool)
            mask[max(y0, 0) : y1, max(x0, 0) : x1] = True
        else:
            mask = np.asarray(spec)
            if mask.dtype != np.bool_:
                raise BadInputError(f"region {name!r} must be a bool mask or a 4-number box.")
            if mask.shape != tuple(shape):
                mask = _resize(mask.astype(np.float64), shape) >= 0.5
        if not mask.any():
            raise BadInputError(f"region {name!r} covers no pixel of the {shape} grid.")
        masks[name] = mask
    return masks


def _summary(
    label: str,
    stack: np.ndarray,
    masks: Mapping[str, np.ndarray],
    n_boot: int,
    seed: int,
) -> GroupSummary:
    rng = np.random.default_rng(seed)
    n = stack.shape[0]
    flat = stack.reshape(n, -1)
    total = flat.sum(axis=1, dtype=np.float64)
    # One resample of the images serves every region and figure (paired intervals).
    resample = rng.integers(0, n, size=(n_boot, n)) if n >= 2 and n_boot >= 1 else None
    stats = []
    for name, mask in masks.items():
        inside = flat[:, mask.ravel()]
        mass = np.divide(
            inside.sum(axis=1, dtype=np.float64), total, out=np.zeros_like(total), where=total != 0
        )
        value = inside.mean(axis=1, dtype=np.float64)
        stats.append(
            RegionStat(
                name=name,
                mass_share=float(mass.mean()),
                mass_ci=_bootstrap(mass, resample),
                mean_value=float(value.mean()),
                mean_ci=_bootstrap(value, resample),
                area_share=float(mask.mean()),
            )
        )
    return GroupSummary(
        label=label,
        count=int(stack.shape[0]),
        mean=stack.mean(axis=0),
        # Median along the contiguous axis: a transposed copy partitions faster than axis 0.
        median=np.median(np.ascontiguousarray(flat.T), axis=1).reshape(stack.shape[1:]),
        std=stack.std(axis=0),
        rank_correlation=rank_correlation(stack, seed=seed),
        regions=tuple(stats),
    )


def assign_bins(
    values: Sequence[float] | np.ndarray,
    *,
    bins: int | None = None,
    edges: Sequence[float] | None = None,
) -> list[str]:
    """Return each value's bin label: ``bins`` quantile bins, or the given ``edges``.

    Labels read ``"[lo, hi)"`` (the last bin closed). Values outside the edges are refused.

    Args:
        values: One number per image (a regressor's output, an age).
        bins: Number of quantile bins (equal counts as far as ties allow).
        edges: Increasing bin edges instead.

    Raises:
        BadInputError: Neither or both of ``bins`` and ``edges``, bad edges, or values outside.
    """
    v = np.asarray(values, dtype=np.float64)
    if (bins is None) == (edges is None):
        raise BadInputError("assign_bins needs exactly one of bins= (a count) or edges=.")
    if edges is None:
        if bins is None or bins < 1:
            raise BadInputError("bins must be a positive count.")
        cuts = np.quantile(v, np.linspace(0, 1, bins + 1))
    else:
        cuts = np.asarray(edges, dtype=np.float64)
        if cuts.size < 2 or np.any(np.diff(cuts) <= 0):
            raise BadInputError("edges must be at least two strictly increasing numbers.")
        if v.min() < cuts[0] or v.max() > cuts[-1]:
            raise BadInputError(
                f"values span {v.min():g}..{v.max():g}, outside the edges "
                f"{cuts[0]:g}..{cuts[-1]:g}; widen the edges."
            )
    index = np.clip(np.searchsorted(cuts, v, side="right") - 1, 0, cuts.size - 2)
    last = cuts.size - 2
    return [f"[{cuts[i]:.4g}, {cuts[i + 1]:.4g}{']' if i == last else ')'}" for i in index.tolist()]


def cohort(
    maps: np.ndarray | Sequence[np.ndarray],
    *,
    groups: Sequence[Any] | None = None,
    regions: Mapping[str, np.ndarray | tuple[int, int, int, int]] | None = None,
    shape: tuple[int, int] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> CohortResult:
    """Aggregate maps over a cohort of aligned images.

    Example:
        >>> import numpy as np, camlens
        >>> maps = np.random.default_rng(0).random((8, 16, 16))
        >>> result = camlens.cohort(maps, groups=["a", "b"] * 4,
        ...                         regions={"centre": (4, 4, 12, 12)})
        >>> [g.label for g in result.groups]
        ['a', 'b']

    Args:
        maps: ``(N, H, W)`` maps or a list of 2-D maps (brought to the largest grid, or
            ``shape``, bilinearly). Signed maps (``raw``) are averaged with their signs, so a
            mean below 0 marks what pushes the prediction down.
        groups: One label per map (a predicted class, a bin from :func:`assign_bins`, a CSV
            column); None: no groups.
        regions: Named bool masks on the grid or ``(y0, x0, y1, x1)`` boxes (end exclusive).
        shape: ``(H, W)`` of the common grid.
        n_boot: Bootstrap resamples of the images for the regions' 95% intervals.
        seed: Seed of the bootstrap and of the rank-correlation sample.

    Returns:
        The overall summary and one per group.

    Raises:
        BadInputError: No maps, non-finite maps, a label count that does not match, or a
            region that covers nothing.
    """
    stack = _stack(maps, shape)
    grid = (int(stack.shape[1]), int(stack.shape[2]))
    masks = _region_masks(regions or {}, grid)
    overall = _summary("all", stack, masks, n_boot, seed)
    summaries: list[GroupSummary] = []
    if groups is not None:
        labels = [str(g) for g in groups]
        if len(labels) != stack.shape[0]:
            raise BadInputError(f"groups has {len(labels)} labels for {stack.shape[0]} maps.")
        array = np.asarray(labels)
        for label in sorted(set(labels)):
            summaries.append(_summary(label, stack[array == label], masks, n_boot, seed))
    return CohortResult(overall=overall, groups=tuple(summaries), shape=grid)


def tta_stability(augmented: np.ndarray) -> dict[str, float]:
    """Return how much maps move across test-time augmentations.

    Args:
        augmented: ``(A, N, H, W)``: for each of ``A`` augmentations (flips, scales; each map
            already mapped back to the original frame), the ``N`` images' maps.

    Returns:
        ``pixel_std``: mean over images and pixels of the std across augmentations;
        ``rank_correlation``: mean over images of the mean pairwise Spearman correlation
        between the augmentations' maps.

    Raises:
        BadInputError: Not 4-D or fewer than two augmentations.
    """
    a = np.asarray(augmented, dtype=np.float64)
    if a.ndim != 4 or a.shape[0] < 2:
        raise BadInputError("tta_stability needs (A, N, H, W) maps with at least 2 augmentations.")
    corr = [rank_correlation(a[:, i]) for i in range(a.shape[1])]
    return {"pixel_std": float(a.std(axis=0).mean()), "rank_correlation": float(np.mean(corr))}


@dataclass(frozen=True)
class FolderMaps:
    """Maps read back from an explain output folder.

    Attributes:
        keys: Image key per map.
        methods: Method per map.
        maps: ``(N, H, W)`` maps in [0, 1] at input size.
        raw: Signed layer-resolution maps, one per row.
        predicted: Predicted class name (or unit) per map; None where not recorded.
        values: Predicted output value per map (a regressor's value); NaN where not recorded.
    """

    keys: tuple[str, ...]
    methods: tuple[str, ...]
    maps: np.ndarray
    raw: tuple[np.ndarray, ...]
    predicted: tuple[str | None, ...]
    values: np.ndarray


def load_folder(folder: str | Path, *, method: str | None = None) -> FolderMaps:
    """Return the maps an ``camlens explain`` folder saved (rank-0 target rows only).

    Args:
        folder: The output folder.
        method: Keep only this method's rows (needed when the folder holds several).

    Raises:
        BadInputError: No results, several methods and none chosen, or missing array files.
    """
    root = Path(folder)
    records, _ = read_records(root / "results.jsonl", ResultRecord)
    rows = [r for r in records if r.arrays and (r.rank or 0) == 0]
    found = sorted({r.method or "" for r in rows})
    if not rows:
        raise BadInputError(f"{root} holds no results with saved maps; run camlens explain first.")
    if method is None and len(found) > 1:
        raise BadInputError(f"{root} holds several methods {found}; choose one with method=.")
    if method is not None:
        rows = [r for r in rows if r.method == method]
        if not rows:
            raise BadInputError(f"{root} holds no {method!r} results; it has {found}.")
    maps, raw = [], []
    for r in rows:
        path = root / str(r.arrays)
        if not path.is_file():
            raise BadInputError(f"{path} is missing; rerun camlens explain with --resume.")
        with np.load(path) as data:
            maps.append(np.asarray(data["map"]))
            raw.append(np.asarray(data["raw"], dtype=np.float64))
    shapes = {m.shape for m in maps}
    stack = np.stack(maps) if len(shapes) == 1 else _stack(maps, None)
    return FolderMaps(
        keys=tuple(r.image_id or "" for r in rows),
        methods=tuple(r.method or "" for r in rows),
        maps=stack,
        raw=tuple(raw),
        predicted=tuple(
            None
            if r.prediction is None
            else (
                r.prediction.name or (None if r.prediction.unit is None else str(r.prediction.unit))
            )
            for r in rows
        ),
        values=np.array(
            [
                np.nan if r.prediction is None or r.prediction.value is None else r.prediction.value
                for r in rows
            ]
        ),
    )
