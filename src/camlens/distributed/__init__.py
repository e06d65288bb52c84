"""Dataset-scale runs of `camlens explain` on Ray Data (``pip install 'camlens[ray]'``).

``explain_dataset`` runs the command's own code on Ray workers, one model per worker, and
writes the same output folder the local command writes (results tables, maps, overlays,
``run.json``, failures; the report reads it unchanged). Nothing here is imported by
``import camlens`` or by the local command.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from camlens.cli._explain import explain_command
from camlens.errors import BadInputError

__all__ = ["explain_dataset"]


def explain_dataset(
    model: str,
    images: Sequence[str | Path],
    out: str | Path,
    *,
    methods: Sequence[str] = ("gradcam",),
    target: str = "top1",
    batch_size: int = 16,
    address: str | None = None,
    workers: int = 2,
    gpus_per_worker: float = 0.0,
    resume: bool = False,
    overwrite: bool = False,
    options: Sequence[str] = (),
) -> Path:
    """Explain a folder (or list) of images with a model on Ray; return the output folder.

    Args:
        model: What `camlens explain` takes as MODEL (a file or a bundled model's name).
        images: Files, folders (searched recursively) or glob patterns.
        out: The output folder (the command's ``--out``).
        methods: CAM methods, as ``--method``.
        target: ``top1``, ``topk:K``, ``class:I`` or ``output:I``.
        batch_size: Images per model call on each worker.
        address: The Ray cluster to join; None starts a local Ray.
        workers: Worker actors, one model each.
        gpus_per_worker: GPUs each worker reserves.
        resume: Skip images whose results are already in ``out``.
        overwrite: Replace the results already in ``out``.
        options: Further command-line options of `camlens explain` (``["--size", "64x64"]``).

    Returns:
        The output folder. Images that could not be read are in its ``failures.jsonl``.

    Raises:
        BadInputError: Options the command refuses, with its message.
    """
    args = [model, *map(str, images), "--out", str(out), "--engine", "ray"]
    for method in methods:
        args += ["--method", method]
    args += ["--target", target, "--batch-size", str(batch_size), "--workers", str(workers)]
    args += ["--gpus-per-worker", str(gpus_per_worker)]
    if address is not None:
        args += ["--address", address]
    args += [*(["--resume"] * resume), *(["--overwrite"] * overwrite), *options]
    try:
        explain_command.main(args, standalone_mode=False)
    except click.ClickException as exc:
        raise BadInputError(exc.format_message()) from exc
    except SystemExit as exc:
        if exc.code not in (0, 3, None):  # 3: some images failed, as failures.jsonl says
            raise
    return Path(out)
