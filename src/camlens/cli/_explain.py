"""`camlens explain`: a model and a folder of images in; overlays, maps, tables and a report out.

Between model calls, a pool of threads writes the last batch's pictures and reads the next
batch on every core, so the command keeps close to the library's own speed.
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import click

import camlens
import camlens.report
from camlens.cli import _common, _remote
from camlens.cli._folder import FolderError, OutputFolder
from camlens.cli._run import Job
from camlens.io import find_images
from camlens.postprocess import Normalize


class Counts(Protocol):
    """What a run counted, locally or on Ray, for the summary."""

    explained: int
    failures: list[tuple[str, str]]
    notes: list[str]
    statuses: collections.Counter[str]


#: Exit status after an interrupt (results so far are kept; ``--resume`` continues).
EXIT_INTERRUPTED = 130


class FolderOrURL(click.ParamType[Any]):
    """``--out``: a local folder (a path) or an fsspec URL (kept as the string it is)."""

    name = "folder"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Return a URL as given, anything else as a folder path."""
        if _remote.is_url(value):
            return value
        return click.Path(file_okay=False, path_type=Path).convert(value, param, ctx)


@click.command("explain")
@_common.run_arguments(
    "Output folder (created), or an fsspec URL (s3://bucket/run, file://, memory://).",
    ("gradcam",),
    out_type=FolderOrURL(),
)
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
@click.option(
    "--region",
    default=None,
    metavar="MASK|auto-fov",
    help="Region of interest: a mask image (nonzero pixels inside, resized with nearest "
    "neighbours to the model's input size) or auto-fov (each image's circular field of view, "
    "thresholded from its model input: fundus photos). Maps are normalised and measured over "
    "the region only, are 0 outside it, and overlays grey the outside out.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in the same --out.")
@click.option("--overwrite", is_flag=True, help="Replace the results already in --out.")
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where to run: this process, or Ray Data workers (pip install 'camlens[ray]').",
)
@click.option(
    "--address",
    default=None,
    help="With --engine ray: the cluster to join (e.g. ray://head:10001 or auto); none "
    "starts a local Ray on this machine.",
)
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="With --engine ray: worker actors, each holding one copy of the model.",
)
@click.option(
    "--gpus-per-worker",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="With --engine ray: GPUs each worker reserves (the model then loads with --device).",
)
# Test-only fault injection for --engine ray (see camlens.cli._ray.Cluster.crash_once).
@click.option("--crash-once", hidden=True, default=None)
@_common.model_options
@_common.preprocess_options
def explain_command(
    model_source: str,
    images: tuple[str, ...],
    out_dir: Path | str,
    methods: tuple[str, ...],
    method_options: tuple[str, ...],
    aug_smooth: bool,
    eigen_smooth: bool,
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
    region: str | None,
    resume: bool,
    overwrite: bool,
    engine: str,
    address: str | None,
    workers: int,
    gpus_per_worker: float,
    crash_once: str | None,
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
    job = Job(
        model_source=model_source,
        methods=methods,
        layer=layer,
        layer_layout=layer_layout,
        grid=grid,
        target=target,
        cmap=cmap,
        alpha=alpha,
        max_size=max_size,
        with_metrics=with_metrics,
        normalize=normalize,
        method_options=method_options,
        aug_smooth=aug_smooth,
        eigen_smooth=eigen_smooth,
        options=options,
        region=region,
    )
    prepared = job.prepare()
    found = find_images([i for i in images if not _remote.is_url(i)])
    _common.warn_missing(found)
    urls, ignored_urls, missing_urls = _remote.find_urls([i for i in images if _remote.is_url(i)])
    for missing in missing_urls:
        _common.warn(f"no such file, folder or match: {missing}")
    inputs: list[Path | str] = [*found.images, *urls]
    if not inputs:
        raise click.ClickException("no images to explain")
    # The inputs as typed: the report shows each image's path from the input it came from.
    settings = {**prepared.settings(), "inputs": [_common.shown_text(i) for i in images]}
    try:
        if isinstance(out_dir, str):
            folder: OutputFolder = _remote.RemoteFolder(
                out_dir, settings, resume=resume, overwrite=overwrite
            )
        else:
            folder = OutputFolder(out_dir, settings, resume=resume, overwrite=overwrite)
    except FolderError as exc:
        raise click.ClickException(str(exc)) from exc

    try:
        run = prepared.run(folder)
        counts: Counts = run
        todo = [
            p for p in inputs if set(prepared.explainers) - folder.methods_done(_remote.key_of(p))
        ]
        skipped = len(inputs) - len(todo)
        interrupted = False
        start = time.perf_counter()
        with _common.progress_bar(len(todo), "explaining") as advance:
            try:
                if engine == "ray":
                    from camlens.cli import _ray

                    cluster = _ray.Cluster(address, workers, gpus_per_worker, crash_once)
                    counts = _ray.run_on_ray(prepared, folder, todo, batch_size, advance, cluster)
                elif urls or isinstance(out_dir, str):
                    from camlens.cli import _ray

                    counts = _ray.run_in_process(prepared, folder, todo, batch_size, advance)
                else:
                    run.all([Path(p) for p in todo], batch_size, advance)
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
        written = camlens.report.write_report(folder.root)
        report: Path | str = written
        if isinstance(folder, _remote.RemoteFolder):
            report = folder.finish(written)
    finally:
        if isinstance(folder, _remote.RemoteFolder):
            folder.discard()  # the staging folder

    _common.summary(
        explained=counts.explained,
        seconds=seconds,
        resumed=skipped,
        failures=counts.failures,
        ignored=[_common.shown_text(str(p)) for p in [*found.ignored, *ignored_urls]],
        report=report,
    )
    _common.print_notes(counts.notes)
    _print_strength(counts.statuses, normalize)
    if interrupted:
        _common.warn("interrupted: finished images are kept; run again with --resume")
        sys.exit(EXIT_INTERRUPTED)
    if counts.failures:
        sys.exit(_common.EXIT_SOME_FAILED)


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
