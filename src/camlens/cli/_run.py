"""The per-batch work of `camlens explain`: read, explain, write pictures, record results.

The local command and the Ray workers (:mod:`camlens.cli._ray`) run this same code: a
:class:`Job` (the command's options, plain and picklable) builds the model, the
preprocessing and the explainers (:func:`Job.build`); a :class:`Run` reads, explains and writes
each image's files and hands its records to a :class:`Sink` (the output folder locally, a
worker's shard under Ray).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import click
import numpy as np
from PIL import Image

import camlens
import camlens.methods
import camlens.region
from camlens.cli import _common
from camlens.cli._folder import row_id, write_file
from camlens.cli._png import encode_png
from camlens.io import LoadedModel, Preprocess, image_key
from camlens.io._images import fitted_size, read_image_and_notes
from camlens.postprocess import Normalize
from camlens.report._records import Failure, Prediction, ResultRecord


class Sink(Protocol):
    """Where a :class:`Run` records results: the output folder, or a worker's shard."""

    root: Path

    def methods_done(self, key: str) -> frozenset[str]:
        """Return the methods whose results for image ``key`` are complete."""

    def add(self, records: Iterable[ResultRecord]) -> None:
        """Record one image's results (their files already written)."""

    def fail(self, failure: Failure) -> None:
        """Record an image that failed."""


@dataclass(frozen=True)
class Job:
    """The options of one `camlens explain` run: what every process building a Run needs."""

    model_source: str
    methods: tuple[str, ...]
    layer: str
    layer_layout: str
    grid: str | None
    target: str
    cmap: str
    alpha: float
    max_size: int
    with_metrics: bool
    normalize: Normalize
    method_options: tuple[str, ...] = ()
    aug_smooth: bool = False
    eigen_smooth: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    #: ``--region``: a mask image's path, ``"auto-fov"``, or None for whole images.
    region: str | None = None

    def prepare(self) -> Prepared:
        """Load the model and check the options.

        Raises:
            click.ClickException: A model, method, layer or colour map the run cannot use.
        """
        loaded = _common.load(self.model_source, self.options)
        methods = self.methods
        if click.get_current_context(silent=True) is not None:  # not in a Ray worker
            methods = _common.chosen_methods(loaded, self.methods, "explain")
        preprocess = _common.preprocessing(loaded, self.options)
        parsed_target = _common.parse_target(self.target)
        layer_arg = None if self.layer == "auto" else self.layer
        placed = _common.layout_arguments(self.layer_layout, self.grid)
        hyper = _common.method_arguments(methods, self.method_options)
        explainers = {}
        for name in dict.fromkeys(methods):
            try:
                explainers[name] = camlens.Explainer(
                    loaded.model,
                    layer_arg,
                    method=camlens.methods.get_method(name, **hyper[name]),
                    normalize=self.normalize,
                    aug_smooth=self.aug_smooth,
                    eigen_smooth=self.eigen_smooth,
                    **placed,
                )
            except camlens.CamlensError as exc:
                raise click.BadParameter(
                    str(exc),
                    param_hint="--method/--method-option/--aug-smooth/--eigen-smooth/--layer/"
                    "--layer-layout/--grid",
                ) from exc
        try:
            camlens.render.colorize(np.zeros((1, 1)), self.cmap)
        except camlens.CamlensError as exc:
            raise click.BadParameter(str(exc), param_hint="--cmap") from exc
        region = read_region(self.region, preprocess.size)
        chosen = {name: options for name, options in hyper.items() if options}
        return Prepared(self, loaded, preprocess, explainers, parsed_target, region, chosen)


@dataclass(frozen=True)
class Prepared:
    """A job with its model loaded and explainers built."""

    job: Job
    loaded: LoadedModel
    preprocess: Preprocess
    explainers: dict[str, camlens.Explainer]
    target: Any
    #: The explainers' ``region=``: an ``(H, W)`` bool mask, ``"auto-fov"``, or None.
    region: np.ndarray | str | None = None
    #: The hyper-parameters given with --method-option, by method (those given any).
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """Return the settings the run records in ``run.json``."""
        job = self.job
        return _common.run_settings(
            self.loaded,
            self.preprocess,
            list(self.explainers),
            job.layer,
            job.target,
            cmap=job.cmap,
            alpha=job.alpha,
            max_size=job.max_size,
            normalize=job.normalize,
            layer_layout=job.layer_layout,
            grid=job.grid,
            region=job.region,
            metrics=["deletion_auc", "insertion_auc"] if job.with_metrics else [],
            method_options=self.method_options,
            aug_smooth=job.aug_smooth,
            eigen_smooth=job.eigen_smooth,
        )

    def run(self, sink: Sink) -> Run:
        """Return a Run that records into ``sink``."""
        job = self.job
        return Run(
            self.loaded,
            self.preprocess,
            self.explainers,
            self.target,
            sink,
            cmap=job.cmap,
            alpha=job.alpha,
            max_size=job.max_size,
            with_metrics=job.with_metrics,
            region=self.region,
        )


def read_region(source: str | None, size: tuple[int, int]) -> np.ndarray | str | None:
    """Return ``--region`` as the explainers take it: ``"auto-fov"`` as it is, a mask image as
    an ``(H, W)`` bool mask at the model's input ``size`` (nonzero colour inside, alpha
    ignored; resized with nearest neighbours, as the images are resized whole).

    Raises:
        click.BadParameter: The mask image cannot be read, or nothing in it is inside.
    """
    if source is None or source == camlens.region.AUTO_FOV:
        return source
    try:
        with Image.open(source) as opened:
            opened.load()
            direct = opened.mode in ("1", "L", "LA", "I", "I;16", "F", "RGB", "RGBA")
            pixels = np.asarray(opened if direct else opened.convert("RGBA"))
    except (OSError, ValueError) as exc:
        raise click.BadParameter(
            f"cannot read the mask image {source!r} ({exc}); give a mask image (nonzero "
            f"inside) or {camlens.region.AUTO_FOV}",
            param_hint="--region",
        ) from exc
    inside: np.ndarray = pixels != 0
    if inside.ndim == 3:  # colour: any nonzero colour channel is inside; alpha is not colour
        inside = np.any(inside[..., : 3 if inside.shape[-1] >= 3 else 1], axis=-1)
    height, width = size
    if inside.shape != (height, width):
        resized = Image.fromarray(inside.astype(np.uint8) * 255).resize(
            (width, height), Image.Resampling.NEAREST
        )
        inside = np.asarray(resized) > 127
    if not inside.any():
        raise click.BadParameter(
            f"the mask image {source!r} has no nonzero pixel at the input size {height}x{width}: "
            "nothing would be inside the region",
            param_hint="--region",
        )
    return inside


@dataclass
class Picture:
    """One input image, read for the model and for display."""

    path: Path
    key: str
    display: np.ndarray  # uint8 (h, w, 3), at most max_size on its longer side


@dataclass(frozen=True)
class Explained:
    """One method's explanation of one image, and what the command measured of it.

    Attributes:
        explanation: The image's rows of the explanation.
        seconds: The explanation's time per image of its batch.
        metrics: Per row, the metric values by name; None without ``--metrics``.
    """

    explanation: camlens.ImageExplanation
    seconds: float
    metrics: tuple[dict[str, float], ...] | None


#: Each image's result by one method, by the image's position in its batch: what explaining it
#: gave, or the exception that explaining it raised.
MethodResults = dict[int, Explained | Exception]


class Run:
    """Reads, explains and writes images batch by batch, overlapping I/O with the model."""

    def __init__(
        self,
        loaded: LoadedModel,
        preprocess: Preprocess,
        explainers: dict[str, camlens.Explainer],
        target: Any,
        folder: Sink,
        *,
        cmap: str,
        alpha: float,
        max_size: int,
        with_metrics: bool,
        region: np.ndarray | str | None = None,
    ) -> None:
        """Keep what every batch needs."""
        self.loaded = loaded
        self.preprocess = preprocess
        self.explainers = explainers
        self.target = target
        self.folder = folder
        self.cmap = cmap
        self.alpha = alpha
        self.max_size = max_size
        self.with_metrics = with_metrics
        self.region = region
        self.explained = 0
        self.failures: list[tuple[str, str]] = []
        #: Remarks on images that were read (an animation's first frame, a huge image).
        self.notes: list[str] = []
        #: How many maps had each status ("ok", "flat", "empty"), over the maps written.
        self.statuses: collections.Counter[str] = collections.Counter()
        #: Progress callback, set for each run by :meth:`all`.
        self.advance: Callable[[int], None] = lambda n: None

    def all(self, paths: Sequence[Path], batch_size: int, advance: Callable[[int], None]) -> None:
        """Process ``paths`` in batches, alternating two phases.

        The model runs alone (its own threads use every core), then one pool of threads, one
        per core, writes that batch's pictures and reads the next batch (decoders and encoders
        release the GIL). Running them beside the model instead was slower: the model's
        threads stall whenever another thread takes their core.
        """
        self.advance = advance
        batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
        if not batches:
            return
        with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            pictures, x = self.read(pool, batches[0])
            for index in range(len(batches)):
                results = self.explain(pictures, x)
                writes = [
                    pool.submit(self._write_image, i, picture, results)
                    for i, picture in enumerate(pictures)
                ]
                following = batches[index + 1] if index + 1 < len(batches) else []
                next_batch = self.read(pool, following)
                self.record(pictures, writes)
                pictures, x = next_batch

    def read(
        self, pool: Executor, paths: Sequence[Path]
    ) -> tuple[list[Picture], np.ndarray | None]:
        """Read a batch on the pool (failures recorded and left out); return it and its input."""
        # Read once, big enough for both the model and the display copy (large JPEGs are
        # decoded at a reduced scale directly).
        read_size = max(self.max_size, *self.preprocess.size)
        reads = [pool.submit(read_image_and_notes, path, max_size=read_size) for path in paths]
        pictures: list[Picture] = []
        model_inputs: list[Future[np.ndarray]] = []
        for path, future in zip(paths, reads, strict=True):
            try:
                pixels, notes = future.result()
            except Exception as exc:  # camlens's error, or a decoder's own on a malformed file
                self._fail(path, _common.read_failure(path, exc))
                continue
            self.notes.extend(_common.shown_text(note) for note in notes)
            pictures.append(Picture(path, image_key(path), _fit(pixels, self.max_size)))
            model_inputs.append(pool.submit(self.preprocess.resize_channels, pixels))
        x = self.preprocess([f.result() for f in model_inputs]) if model_inputs else None
        return pictures, x

    def explain(self, pictures: list[Picture], x: np.ndarray | None) -> dict[str, MethodResults]:
        """Return each method's results for the batch (one image at a time on failure)."""
        if x is None:
            return {}
        results: dict[str, MethodResults] = {}
        for name, explainer in self.explainers.items():
            needed = [
                i for i, p in enumerate(pictures) if name not in self.folder.methods_done(p.key)
            ]
            if not needed:
                continue
            start = time.perf_counter()
            with warnings.catch_warnings():
                # Weak maps are counted from the results and summed up in one line at the end.
                warnings.simplefilter("ignore", camlens.MapStrengthWarning)
                parts, rows = _explain_each(explainer, x, needed, self.target, self.region)
            seconds = (time.perf_counter() - start) / len(needed)
            for exp, positions in parts:
                measured = self._metrics(x[positions], exp)
                t = exp.targets_per_image
                for j, i in enumerate(positions):
                    own = None if measured is None else measured[j * t : (j + 1) * t]
                    rows[i] = Explained(exp.image(j), seconds, own)
            results[name] = rows
        return results

    def _metrics(
        self, x: np.ndarray, exp: camlens.Explanation
    ) -> tuple[dict[str, float], ...] | None:
        """Return each row's deletion and insertion AUCs; None without ``--metrics``."""
        if not self.with_metrics:
            return None
        from camlens import metrics

        if exp.region is None:
            deletion = metrics.deletion(self.loaded.model, x, exp).auc
            insertion = metrics.insertion(self.loaded.model, x, exp).auc
        else:  # the metrics take one region for all images: each image with its own
            deletion, insertion = (
                np.concatenate(
                    [
                        score(self.loaded.model, x[j : j + 1], part, region=exp.region[j]).auc
                        for j, part in enumerate(_per_image(exp))
                    ]
                )
                for score in (metrics.deletion, metrics.insertion)
            )
        return tuple(
            {"deletion_auc": float(d), "insertion_auc": float(i)}
            for d, i in zip(deletion, insertion, strict=True)
        )

    def record(self, pictures: list[Picture], writes: list[Future[list[ResultRecord]]]) -> None:
        """Append each image's result lines, in input order, once its files are written."""
        for picture, future in zip(pictures, writes, strict=True):
            try:
                records = future.result()
            except camlens.CamlensError as exc:
                self._fail(picture.path, str(exc))
                continue
            if records:
                self.folder.add(records)
                self.explained += 1
                self.statuses.update(r.status or "ok" for r in records)
            self.advance(1)

    def _fail(self, path: Path, error: str) -> None:
        """Record an image that failed."""
        image, error = _common.shown_text(str(path)), _common.shown_text(error)
        self.failures.append((image, error))
        self.folder.fail(Failure(image=image, error=error))
        self.advance(1)

    def _write_image(
        self, index: int, picture: Picture, results: dict[str, MethodResults]
    ) -> list[ResultRecord]:
        """Write one image's files; return its result records."""
        root = self.folder.root
        image_file = f"images/{picture.key}.jpg"
        records: list[ResultRecord] = []
        if not (root / image_file).exists():
            write_file(root / image_file, _jpeg(picture.display))
        height, width = picture.display.shape[:2]
        for method, rows in results.items():
            item = rows.get(index)
            if item is None:
                continue
            if isinstance(item, Exception):
                message = str(item) if isinstance(item, camlens.CamlensError) else repr(item)
                raise camlens.CamlensError(f"{method}: {message}")
            exp = item.explanation
            strength = exp.strength
            prediction = _prediction(exp, self.loaded)
            for rank in range(len(exp)):
                stem = row_id(picture.key, method, rank)
                cam_map = exp.maps[rank]
                shown = camlens.render.map_at_size(cam_map, (height, width))
                overlay = camlens.overlay(
                    picture.display,
                    shown,
                    cmap=self.cmap,
                    alpha=self.alpha,
                    region=exp.region,
                )
                write_file(root / f"overlays/{stem}.png", encode_png(np.asarray(overlay)))
                gray = np.round(np.clip(shown, 0.0, 1.0) * 255).astype(np.uint8)
                write_file(root / f"maps/{stem}.png", encode_png(gray))
                buffer = io.BytesIO()
                arrays = {"map": cam_map.astype(np.float16), "raw": exp.raw[rank]}
                if exp.region is not None:
                    arrays["region"] = exp.region
                np.savez(buffer, **arrays)  # type: ignore[arg-type]
                write_file(root / f"arrays/{stem}.npz", buffer.getvalue())
                peak = np.unravel_index(int(np.argmax(cam_map)), cam_map.shape)
                unit = int(exp.units[rank])
                record = ResultRecord(
                    image=_common.shown_text(str(picture.path)),
                    key=picture.key,
                    method=method,
                    layer=",".join(exp.layers),
                    target=exp.target,
                    rank=rank,
                    targets=len(exp),
                    unit=unit,
                    unit_name=_class_name(self.loaded, unit),
                    score=float(exp.scores[rank]),
                    score_kind=exp.score_kind,
                    sign=int(exp.signs[rank]),
                    prediction=prediction,
                    image_file=image_file,
                    overlay=f"overlays/{stem}.png",
                    map=f"maps/{stem}.png",
                    arrays=f"arrays/{stem}.npz",
                    peak=(int(peak[0]), int(peak[1])),
                    height=int(cam_map.shape[0]),
                    width=int(cam_map.shape[1]),
                    seconds=round(item.seconds, 6),
                    status=str(strength.status[rank]),
                    contrast=round(float(strength.contrast[rank]), 6),
                    raw_min=float(strength.raw_min[rank]),
                    raw_max=float(strength.raw_max[rank]),
                    positive_share=round(float(strength.positive_share[rank]), 6),
                    metrics=None if item.metrics is None else item.metrics[rank],
                )
                records.append(record)
        return records


def _explain_each(
    explainer: camlens.Explainer,
    x: np.ndarray,
    needed: list[int],
    target: Any,
    region: np.ndarray | str | None = None,
) -> tuple[list[tuple[camlens.Explanation, list[int]]], MethodResults]:
    """Explain the images ``x[needed]`` in one call, or where it fails one at a time.

    ``region`` (one mask for all images, or ``"auto-fov"``) is passed on to every call.
    Returns the explanations, each with the positions of the images it explains, and the
    exception of each image that failed alone.
    """
    try:
        return [(explainer(x[needed], target, region=region), needed)], {}
    except Exception:  # retried image by image; each failure is reported
        parts: list[tuple[camlens.Explanation, list[int]]] = []
        failed: MethodResults = {}
        for i in needed:  # find the culprit, keep the others
            try:
                parts.append((explainer(x[i : i + 1], target, region=region), [i]))
            except camlens.LayerError:
                raise  # the layer does not fit these inputs: every image would fail alike
            except Exception as exc:  # reported as this image's failure
                failed[i] = exc
        return parts, failed


def _per_image(exp: camlens.Explanation) -> list[camlens.Explanation]:
    """Return each image's rows of ``exp`` as an explanation of one image (for the metrics)."""
    t = exp.targets_per_image
    parts = []
    for j in range(len(exp) // t):
        rows = slice(j * t, (j + 1) * t)
        parts.append(
            dataclasses.replace(
                exp,
                maps=exp.maps[rows],
                raw=exp.raw[rows],
                scores=exp.scores[rows],
                image_index=np.zeros(t, dtype=np.int64),
                units=exp.units[rows],
                signs=exp.signs[rows],
                outputs=None if exp.outputs is None else exp.outputs[j : j + 1],
                region=None if exp.region is None else exp.region[j : j + 1],
            )
        )
    return parts


def _prediction(exp: camlens.ImageExplanation, loaded: LoadedModel) -> Prediction | None:
    """Return the model's top prediction for one image (with its probability for classifiers).

    A regressor (a single output, or an ``output:I`` target) has values, not probabilities: its
    first output is given. A classifier's output is a probability where the explanation's
    ``score_kind`` says so, else logits, whose softmax gives it; a plain ``"model output"``
    that is already a distribution (a PyTorch model ending in its own softmax, which the
    explanation cannot tell) is taken as the probabilities it is.
    """
    output = exp.output
    if output is None or output.size == 0:
        return None
    if output.size == 1 or exp.target_kind == "Output":
        return Prediction(unit=0, name=_class_name(loaded, 0), value=float(output[0]))
    values = output.astype(np.float64)
    top = int(np.argmax(values))
    if exp.score_kind == "softmax probability" or (
        exp.score_kind == "model output" and _is_distribution(values)
    ):
        probability = float(values[top])
    else:
        shifted = np.exp(values - values.max())
        probability = float(shifted[top] / shifted.sum())
    return Prediction(
        unit=top, name=_class_name(loaded, top), value=float(values[top]), probability=probability
    )


def _is_distribution(values: np.ndarray) -> bool:
    """Return whether ``values`` are non-negative and sum to 1 (within float32 rounding)."""
    return bool(values.min() >= 0 and abs(values.sum() - 1) < 1e-3)


def _class_name(loaded: LoadedModel, unit: int) -> str | None:
    """Return the class name of an output unit, where the model's classes are known."""
    if loaded.classes is None or not 0 <= unit < len(loaded.classes):
        return None
    return loaded.classes[unit]


def _fit(pixels: np.ndarray, max_size: int) -> np.ndarray:
    """Return a picture scaled down so that its longer side is at most ``max_size``."""
    height, width = pixels.shape[:2]
    size = fitted_size((width, height), max_size)
    if size is None:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))


def _jpeg(pixels: np.ndarray) -> bytes:
    """Return a uint8 RGB picture encoded as JPEG (quality 90)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
