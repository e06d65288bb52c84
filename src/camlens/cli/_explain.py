"""`camlens explain`: a model and a folder of images in; overlays, maps, tables and a report out.

Between model calls, a pool of threads writes the last batch's pictures and reads the next
batch on every core, so the command keeps close to the library's own speed.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image
from rich.console import Console

import camlens
import camlens.report
from camlens.cli import _common
from camlens.cli._folder import FolderError, OutputFolder, row_id, write_file
from camlens.cli._png import encode_png
from camlens.io import LoadedModel, Preprocess, find_images, image_key
from camlens.io._images import fitted_size, read_image_and_notes

#: Exit status after an interrupt (results so far are kept; ``--resume`` continues).
EXIT_INTERRUPTED = 130


@dataclass
class Picture:
    """One input image, read for the model and for display."""

    path: Path
    key: str
    display: np.ndarray  # uint8 (h, w, 3), at most max_size on its longer side


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
    target: str,
    batch_size: int,
    cmap: str,
    alpha: float,
    max_size: int,
    with_metrics: bool,
    resume: bool,
    overwrite: bool,
    **options: Any,
) -> None:
    """Explain MODEL on IMAGES (files, folders searched recursively, or glob patterns).

    MODEL is a Keras .keras/.h5 file, a torch.export program (.pt2), a state dict or
    .safetensors file with --factory, a pickled model with --trust-pickle, or a bundled model
    (mobilenet_v2, mobilenet_v2_keras); see `camlens layers`. Writes to --out an
    overlay and a grayscale map PNG per image and method, all maps in maps.npz,
    results.csv/results.jsonl and an HTML report (index.html). Unreadable images are reported
    and skipped; exit status 3 then. Animated images are explained on their first frame (a
    note says so). An interrupted run continues with --resume.
    """
    loaded = _common.load(model_source, options)
    preprocess = _common.preprocessing(loaded, options)
    parsed_target = _common.parse_target(target)
    layer_arg = None if layer == "auto" else layer
    explainers = {}
    for name in dict.fromkeys(methods):
        try:
            explainers[name] = camlens.Explainer(loaded.model, layer_arg, method=name)
        except camlens.CamlensError as exc:
            raise click.BadParameter(str(exc), param_hint="--method/--layer") from exc
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
        ignored=[shown_text(str(p)) for p in found.ignored],
        report=report,
    )
    _print_notes(run.notes)
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
            except camlens.CamlensError as exc:
                self._fail(path, str(exc))
                continue
            except Exception as exc:  # a decoder's own error on a malformed file: skip it too
                self._fail(path, f"{path}: cannot be read ({type(exc).__name__}: {exc})")
                continue
            self.notes.extend(shown_text(note) for note in notes)
            pictures.append(Picture(path, image_key(path), _fit(pixels, self.max_size)))
            model_inputs.append(pool.submit(self.preprocess.resize_channels, pixels))
        x = self.preprocess([f.result() for f in model_inputs]) if model_inputs else None
        return pictures, x

    def explain(self, pictures: list[Picture], x: np.ndarray | None) -> dict[str, Any]:
        """Return each method's explanation of the batch (one image at a time on failure)."""
        if x is None:
            return {}
        results: dict[str, Any] = {}
        for name, explainer in self.explainers.items():
            needed = [
                i for i, p in enumerate(pictures) if name not in self.folder.methods_done(p.key)
            ]
            if not needed:
                continue
            start = time.perf_counter()
            rows: dict[int, Any] = {}
            try:
                exp = explainer(x[needed], self.target)
                rows = {i: _rows_of(exp, j) for j, i in enumerate(needed)}
            except Exception:  # retried image by image; each failure is reported
                for i in needed:  # find the culprit, keep the others
                    try:
                        rows[i] = _rows_of(explainer(x[i : i + 1], self.target), 0)
                    except Exception as exc:  # reported as this image's failure
                        rows[i] = exc
            seconds = (time.perf_counter() - start) / len(needed)
            if self.with_metrics:
                self._score(x, rows)
            results[name] = (rows, seconds)
        return results

    def _score(self, x: np.ndarray, rows: dict[int, Any]) -> None:
        """Add deletion and insertion AUCs to each image's rows."""
        from camlens import metrics

        for i, item in rows.items():
            if isinstance(item, Exception):
                continue
            exp = item["explanation"]
            xi = x[i : i + 1]
            item["metrics"] = {
                "deletion_auc": [
                    float(v) for v in metrics.deletion(self.loaded.model, xi, exp).auc
                ],
                "insertion_auc": [
                    float(v) for v in metrics.insertion(self.loaded.model, xi, exp).auc
                ],
            }

    def record(self, pictures: list[Picture], writes: list[Future[list[dict[str, Any]]]]) -> None:
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
            self.advance(1)

    def _fail(self, path: Path, error: str) -> None:
        """Record an image that failed."""
        image, error = shown_text(str(path)), shown_text(error)
        self.failures.append((image, error))
        self.folder.fail(image, error)
        self.advance(1)

    def _write_image(
        self, index: int, picture: Picture, results: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Write one image's files; return its result records."""
        root = self.folder.root
        image_file = f"images/{picture.key}.jpg"
        records: list[dict[str, Any]] = []
        if not (root / image_file).exists():
            write_file(root / image_file, _jpeg(picture.display))
        height, width = picture.display.shape[:2]
        for method, (rows, seconds) in results.items():
            item = rows.get(index)
            if item is None:
                continue
            if isinstance(item, Exception):
                message = str(item) if isinstance(item, camlens.CamlensError) else repr(item)
                raise camlens.CamlensError(f"{method}: {message}")
            exp, row_indices = item["explanation"], item["rows"]
            prediction = _prediction(
                None if exp.outputs is None else exp.outputs[0],
                self.loaded,
                regression=isinstance(self.target, camlens.Output),
            )
            for rank, row in enumerate(row_indices):
                stem = row_id(picture.key, method, rank)
                cam_map = exp.maps[row]
                shown = camlens.render.map_at_size(cam_map, (height, width))
                overlay = camlens.overlay(picture.display, shown, cmap=self.cmap, alpha=self.alpha)
                write_file(root / f"overlays/{stem}.png", encode_png(np.asarray(overlay)))
                gray = np.round(shown * 255).astype(np.uint8)
                write_file(root / f"maps/{stem}.png", encode_png(gray))
                buffer = io.BytesIO()
                np.savez(buffer, map=cam_map.astype(np.float16), raw=exp.raw[row])
                write_file(root / f"arrays/{stem}.npz", buffer.getvalue())
                peak = np.unravel_index(int(np.argmax(cam_map)), cam_map.shape)
                unit = int(exp.units[row])
                record: dict[str, Any] = {
                    "image": shown_text(str(picture.path)),
                    "key": picture.key,
                    "method": method,
                    "layer": ",".join(exp.layers),
                    "target": exp.target,
                    "rank": rank,
                    "targets": len(row_indices),
                    "unit": unit,
                    "unit_name": _class_name(self.loaded, unit),
                    "score": float(exp.scores[row]),
                    "score_kind": exp.score_kind,
                    "sign": int(exp.signs[row]),
                    "prediction": prediction,
                    "image_file": image_file,
                    "overlay": f"overlays/{stem}.png",
                    "map": f"maps/{stem}.png",
                    "arrays": f"arrays/{stem}.npz",
                    "peak": [int(peak[0]), int(peak[1])],
                    "height": int(cam_map.shape[0]),
                    "width": int(cam_map.shape[1]),
                    "seconds": round(seconds, 6),
                }
                if "metrics" in item:
                    record["metrics"] = {k: v[rank] for k, v in item["metrics"].items()}
                records.append(record)
        return records


def _rows_of(exp: camlens.Explanation, image: int) -> dict[str, Any]:
    """Return one image's rows of an explanation, with the explanation cut to that image."""
    t = exp.targets_per_image
    rows = list(range(image * t, (image + 1) * t))
    return {"explanation": _slice(exp, image, rows), "rows": list(range(t))}


def _slice(exp: camlens.Explanation, image: int, rows: list[int]) -> camlens.Explanation:
    """Return the explanation of one image (its rows, its output)."""
    return replace(
        exp,
        maps=exp.maps[rows],
        raw=exp.raw[rows],
        scores=exp.scores[rows],
        image_index=np.zeros(len(rows), dtype=np.int64),
        units=exp.units[rows],
        signs=exp.signs[rows],
        outputs=None if exp.outputs is None else exp.outputs[image : image + 1],
    )


def _prediction(
    output: np.ndarray | None, loaded: LoadedModel, *, regression: bool
) -> dict[str, Any] | None:
    """Return the model's top prediction for one image (with its probability for classifiers).

    A regressor (a single output, or ``output:I`` targets) has values, not probabilities: its
    first output is given.
    """
    if output is None or output.size == 0:
        return None
    if output.size == 1 or regression:
        return {"unit": 0, "name": _class_name(loaded, 0), "value": float(output[0])}
    top = int(np.argmax(output))
    values = output.astype(np.float64)
    is_probability = values.min() >= 0 and abs(values.sum() - 1) < 1e-3
    if is_probability:
        probability = float(values[top])
    else:
        shifted = np.exp(values - values.max())
        probability = float(shifted[top] / shifted.sum())
    return {
        "unit": top,
        "name": _class_name(loaded, top),
        "value": float(values[top]),
        "probability": probability,
    }


def _class_name(loaded: LoadedModel, unit: int) -> str | None:
    """Return the class name of an output unit, where the model's classes are known."""
    if loaded.classes is None or not 0 <= unit < len(loaded.classes):
        return None
    return loaded.classes[unit]


def shown_text(text: str) -> str:
    """Return ``text`` (a path, or a message naming one) as valid Unicode, to write and print.

    A file name that is not valid UTF-8 reaches Python with its undecodable bytes as lone
    surrogates (``surrogateescape``), which no UTF-8 file or terminal takes: they are shown as
    ``\\xNN`` escapes instead (Windows' lone surrogates as ``\\udNNN``).
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is not an undecoded byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _print_notes(notes: Sequence[str]) -> None:
    """Print one line per remark on an image read: ``  note: <image>: <remark>``."""
    out = Console(highlight=False, soft_wrap=True)  # as the summary above it prints
    for note in notes:
        out.print(f"  note: {note}", markup=False)


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
