"""`camlens explain`: a model and a folder of images in; overlays, maps, tables and a report out.

Between model calls, a pool of threads writes the last batch's pictures and reads the next
batch on every core, so the command keeps close to the library's own speed.
"""

from __future__ import annotations

import collections
import io
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image

import camlens
import camlens.report
from camlens.cli import _common
from camlens.cli._folder import FolderError, OutputFolder, row_id, write_file
from camlens.cli._png import encode_png
from camlens.io import LoadedModel, Preprocess, find_images, image_key
from camlens.io._images import fitted_size, read_image_and_notes
from camlens.postprocess import Normalize
from camlens.report._records import Failure, Prediction, ResultRecord

#: Exit status after an interrupt (results so far are kept; ``--resume`` continues).
EXIT_INTERRUPTED = 130


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


@click.command("explain")
@_common.run_arguments("Output folder (created).", ("gradcam",))
@click.option(
    "--batch-size",
    default=16,
    show_default=True,
    type=click.IntRange(min=1),
    help="Images per call.",
)
@_common.overlay_options
@click.option(
    "--max-size",
    default=1024,
    show_default=True,
    type=click.IntRange(min=16),
    help="Longer side of the pictures in the output (larger inputs are scaled down).",
)
@click.option(
    "--metrics",
    "with_metrics",
    is_flag=True,
    help="Also score each map: deletion and insertion AUC (extra forward passes).",
)
@click.option(
    "--normalize",
    type=click.Choice(["minmax", "max", "none"]),
    default="minmax",
    show_default=True,
    help="How maps are scaled: minmax stretches each map over the whole colour scale; max "
    "divides by the maximum (a weak, near-flat map stays near-uniform); none keeps the "
    "values (pictures clip them to [0, 1]).",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in the same --out.")
@click.option("--overwrite", is_flag=True, help="Replace the results already in --out.")
@_common.model_options
@_common.preprocess_options
def explain_command(
    model_source: str,
    images: tuple[str, ...],
    out_dir: Path,
    methods: tuple[str, ...],
    layer: str,
    layer_layout: str,
    grid: str | None,
    target: str,
    batch_size: int,
    cmap: str,
    alpha: float,
    max_size: int,
    with_metrics: bool,
    normalize: Normalize,
    resume: bool,
    overwrite: bool,
    **options: Any,
) -> None:
    """Explain MODEL on IMAGES (files, folders searched recursively, or glob patterns).

    MODEL is a Keras .keras/.h5 file, a torch.export program (.pt2), an ONNX model (.onnx:
    gradient-free methods only, ablationcam by default), a state dict or .safetensors file
    with --factory, a pickled model with --trust-pickle, or a bundled model (mobilenet_v2,
    mobilenet_v2_keras); see `camlens layers`. Writes to --out an
    overlay and a grayscale map PNG per image and method, all maps in maps.npz,
    results.csv/results.jsonl and an HTML report (index.html). Unreadable images are reported
    and skipped; exit status 3 then. Animated images are explained on their first frame (a
    note says so). An interrupted run continues with --resume.
    """
    loaded = _common.load(model_source, options)
    methods = _common.chosen_methods(loaded, methods, "explain")
    preprocess = _common.preprocessing(loaded, options)
    parsed_target = _common.parse_target(target)
    layer_arg = None if layer == "auto" else layer
    placed = _common.layout_arguments(layer_layout, grid)
    explainers = {}
    for name in dict.fromkeys(methods):
        try:
            explainers[name] = camlens.Explainer(
                loaded.model, layer_arg, method=name, normalize=normalize, **placed
            )
        except camlens.CamlensError as exc:
            raise click.BadParameter(
                str(exc), param_hint="--method/--layer/--layer-layout/--grid"
            ) from exc
    try:
        camlens.render.colorize(np.zeros((1, 1)), cmap)
    except camlens.CamlensError as exc:
        raise click.BadParameter(str(exc), param_hint="--cmap") from exc

    found = find_images(images)
    _common.warn_missing(found)
    if not found.images:
        raise click.ClickException("no images to explain")
    settings = _common.run_settings(
        loaded,
        preprocess,
        list(explainers),
        layer,
        target,
        cmap=cmap,
        alpha=alpha,
        max_size=max_size,
        normalize=normalize,
        layer_layout=layer_layout,
        grid=grid,
        metrics=["deletion_auc", "insertion_auc"] if with_metrics else [],
    )
    try:
        folder = OutputFolder(out_dir, settings, resume=resume, overwrite=overwrite)
    except FolderError as exc:
        raise click.ClickException(str(exc)) from exc

    run = Run(
        loaded,
        preprocess,
        explainers,
        parsed_target,
        folder,
        cmap=cmap,
        alpha=alpha,
        max_size=max_size,
        with_metrics=with_metrics,
    )
    todo = [p for p in found.images if set(explainers) - folder.methods_done(image_key(p))]
    skipped = len(found.images) - len(todo)
    interrupted = False
    start = time.perf_counter()
    with _common.progress_bar(len(todo), "explaining") as advance:
        try:
            run.all(todo, batch_size, advance)
        except KeyboardInterrupt:
            interrupted = True
        except camlens.LayerError as exc:
            raise click.ClickException(
                f"{exc} (on the command line: --layer NAME, --layer-layout, --grid HxW; see "
                "`camlens layers MODEL`)"
            ) from exc
        finally:
            folder.close()
    seconds = time.perf_counter() - start
    folder.gather_arrays()
    report = camlens.report.write_report(out_dir)

    _common.summary(
        explained=run.explained,
        seconds=seconds,
        resumed=skipped,
        failures=run.failures,
        ignored=[_common.shown_text(str(p)) for p in found.ignored],
        report=report,
    )
    _common.print_notes(run.notes)
    _print_strength(run.statuses, normalize)
    if interrupted:
        _common.warn("interrupted: finished images are kept; run again with --resume")
        sys.exit(EXIT_INTERRUPTED)
    if run.failures:
        sys.exit(_common.EXIT_SOME_FAILED)


class Run:
    """Reads, explains and writes images batch by batch, overlapping I/O with the model."""

    def __init__(
        self,
        loaded: LoadedModel,
        preprocess: Preprocess,
        explainers: dict[str, camlens.Explainer],
        target: Any,
        folder: OutputFolder,
        *,
        cmap: str,
        alpha: float,
        max_size: int,
        with_metrics: bool,
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
                parts, rows = _explain_each(explainer, x, needed, self.target)
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

        deletion = metrics.deletion(self.loaded.model, x, exp).auc
        insertion = metrics.insertion(self.loaded.model, x, exp).auc
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
                overlay = camlens.overlay(picture.display, shown, cmap=self.cmap, alpha=self.alpha)
                write_file(root / f"overlays/{stem}.png", encode_png(np.asarray(overlay)))
                gray = np.round(np.clip(shown, 0.0, 1.0) * 255).astype(np.uint8)
                write_file(root / f"maps/{stem}.png", encode_png(gray))
                buffer = io.BytesIO()
                np.savez(buffer, map=cam_map.astype(np.float16), raw=exp.raw[rank])
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
    explainer: camlens.Explainer, x: np.ndarray, needed: list[int], target: Any
) -> tuple[list[tuple[camlens.Explanation, list[int]]], MethodResults]:
    """Explain the images ``x[needed]`` in one call, or where it fails one at a time.

    Returns the explanations, each with the positions of the images it explains, and the
    exception of each image that failed alone.
    """
    try:
        return [(explainer(x[needed], target), needed)], {}
    except Exception:  # retried image by image; each failure is reported
        parts: list[tuple[camlens.Explanation, list[int]]] = []
        failed: MethodResults = {}
        for i in needed:  # find the culprit, keep the others
            try:
                parts.append((explainer(x[i : i + 1], target), [i]))
            except camlens.LayerError:
                raise  # the layer does not fit these inputs: every image would fail alike
            except Exception as exc:  # reported as this image's failure
                failed[i] = exc
        return parts, failed


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


def _print_strength(statuses: collections.Counter[str], normalize: str) -> None:
    """Print one line on the weak maps written: how many are near-flat and how many empty."""
    flat, empty = statuses["flat"], statuses["empty"]
    if not flat and not empty:
        return
    parts = [f"{flat} near-flat"] if flat else []
    parts += [f"{empty} empty (no positive evidence; shown as zeros)"] if empty else []
    advice = "; --normalize max shows their strength" if flat and normalize == "minmax" else ""
    _common.warn(
        f"weak maps: {', '.join(parts)} of {statuses.total()}: see the status and contrast "
        f"columns of results.csv{advice}"
    )


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
