"""`camlens explain --engine ray`: the same per-batch work on Ray Data actors.

Each worker is a stateful ``map_batches`` actor that prepares the job once (loads the model,
builds the explainers) and runs :class:`camlens.cli._run.Run` on each batch of image paths:
it writes the pictures, maps and arrays straight into the output folder (a shared
filesystem on a cluster) and returns the batch's result records as rows. The driver is the
one writer of the tables (``results.jsonl``/``.csv``, ``failures.jsonl``): it appends each
image's records once, by key, so a batch retried after a worker died is never recorded twice.
Only this module and :mod:`camlens.distributed` import Ray.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from camlens.cli import _remote
from camlens.cli._folder import OutputFolder
from camlens.cli._run import Job, Prepared
from camlens.report._records import Failure, ResultRecord


@dataclass(frozen=True)
class Cluster:
    """Where and how wide the Ray run is.

    Attributes:
        address: The Ray cluster to join; None starts a local Ray on this machine.
        workers: Worker actors, each with its own copy of the model.
        gpus_per_worker: GPUs each actor reserves (0: CPU only).
        crash_once: Test-only fault injection: a marker file; the first worker to finish a
            batch while it is absent creates it and dies before returning the batch.
    """

    address: str | None = None
    workers: int = 2
    gpus_per_worker: float = 0.0
    crash_once: str | None = None


@dataclass
class Outcome:
    """What the driver counted of a Ray run (the same fields the local Run keeps)."""

    explained: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)


class Shard:
    """A worker's sink: keeps a batch's records to hand back to the driver."""

    def __init__(self, root: Path) -> None:
        """Write files under ``root``; keep records in memory."""
        self.root = root
        self.results: list[list[ResultRecord]] = []
        self.failures: list[Failure] = []

    def methods_done(self, key: str) -> frozenset[str]:
        """Return no method: the driver sends only images still to do."""
        return frozenset()

    def add(self, records: Iterable[ResultRecord]) -> None:
        """Keep one image's records."""
        self.results.append(list(records))

    def fail(self, failure: Failure) -> None:
        """Keep an image's failure."""
        self.failures.append(failure)


class Batches:
    """Explains batches of image paths or URLs into the output folder ``root`` (path or URL).

    The work of one worker (or of the command itself, for URLs without Ray): where neither the
    images nor ``root`` are URLs the files go straight into the folder, else through
    :func:`camlens.cli._remote.explain_staged`.
    """

    def __init__(self, prepared: Prepared, root: str, batch_size: int) -> None:
        """Keep the prepared job; write under ``root``."""
        self.prepared = prepared
        self.store = _remote.Store(root)
        self.batch_size = batch_size

    def __call__(self, paths: Sequence[str]) -> list[tuple[str, str]]:
        """Explain ``paths``; return their rows: (``result``/``failure``/``note``, JSON)."""
        if self.store.fs is None and not any(map(_remote.is_url, paths)):
            results, failures, notes = self._explain(
                [Path(p) for p in paths], Path(self.store.root)
            )
        else:
            results, failures, notes = _remote.explain_staged(paths, self.store, self._explain)
        return (
            [
                ("result", json.dumps([r.to_json() for r in rs], ensure_ascii=False))
                for rs in results
            ]
            + [("failure", json.dumps(f.to_json(), ensure_ascii=False)) for f in failures]
            + [("note", json.dumps(note)) for note in notes]
        )

    def _explain(
        self, paths: list[Path], root: Path
    ) -> tuple[list[list[ResultRecord]], list[Failure], list[str]]:
        shard = Shard(root)
        run = self.prepared.run(shard)
        run.all(paths, self.batch_size, lambda n: None)
        return shard.results, shard.failures, run.notes


class ExplainWorker:
    """A Ray Data actor: holds the model, explains batches of image paths or URLs."""

    def __init__(
        self, job: Job, root: str, cwd: str, batch_size: int, crash_once: str | None
    ) -> None:
        """Load the model once for this actor, in the driver's folder (paths are as given)."""
        if os.path.isdir(cwd):
            os.chdir(cwd)
        self.batches = Batches(job.prepare(), root, batch_size)
        self.crash_once = crash_once

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Explain one batch; return its rows: ``kind`` and ``line`` (JSON)."""
        rows = self.batches([str(p) for p in batch["path"]])
        if self.crash_once is not None and not os.path.exists(self.crash_once):
            Path(self.crash_once).touch()
            os._exit(1)  # test-only: this worker dies with the batch done but not returned
        return {
            "kind": np.array([k for k, _ in rows], dtype=object),
            "line": np.array([line for _, line in rows], dtype=object),
        }


def root_of(folder: OutputFolder) -> str:
    """Return where the workers write the folder's files: its URL, or its absolute path."""
    return folder.url if isinstance(folder, _remote.RemoteFolder) else str(folder.root.resolve())


def run_in_process(
    prepared: Prepared,
    folder: OutputFolder,
    todo: Sequence[Path | str],
    batch_size: int,
    advance: Callable[[int], None],
) -> Outcome:
    """Explain ``todo`` here, batch by batch, as one worker would (for URL images or --out)."""
    outcome = Outcome()
    batches = Batches(prepared, root_of(folder), batch_size)
    seen: set[str] = set()
    for start in range(0, len(todo), batch_size):
        for kind, line in batches([str(p) for p in todo[start : start + batch_size]]):
            _record(kind, line, folder, outcome, seen, advance)
    return outcome


def run_on_ray(
    prepared: Prepared,
    folder: OutputFolder,
    todo: Sequence[Path | str],
    batch_size: int,
    advance: Callable[[int], None],
    cluster: Cluster,
) -> Outcome:
    """Explain ``todo`` on Ray workers; append their records to ``folder`` once each."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise click.ClickException(
            "--engine ray needs Ray Data: pip install 'camlens[ray]'"
        ) from exc
    outcome = Outcome()
    if not todo:
        return outcome
    started = not ray.is_initialized()
    if started:
        ray.init(
            address=cluster.address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))  # type: ignore[no-untyped-call]
        # Fractional CPUs keep a core free for Ray Data's own tasks: a pool that takes every
        # core starves them and the pipeline hangs.
        per_worker = min(1.0, cpus / (cluster.workers + 1))
        # The methods as the driver chose them (a worker has no command line to read).
        job = dataclasses.replace(prepared.job, methods=tuple(prepared.explainers))
        items = ray.data.from_items([{"path": str(p)} for p in todo])
        ds = items.map_batches(
            ExplainWorker,
            fn_constructor_kwargs={
                "job": job,
                "root": root_of(folder),
                "cwd": os.getcwd(),
                "batch_size": batch_size,
                "crash_once": cluster.crash_once,
            },
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=cluster.workers),
            num_cpus=per_worker,
            # Ray Data restarts a dead actor and retries its batch (actors default to
            # unlimited restarts and task retries): a killed worker's images are redone.
            num_gpus=cluster.gpus_per_worker or None,
        )
        seen: set[str] = set()
        for row in ds.iter_rows():
            _record(str(row["kind"]), str(row["line"]), folder, outcome, seen, advance)
    finally:
        if started:
            ray.shutdown()
    return outcome


def _record(
    kind: str,
    line: str,
    folder: OutputFolder,
    outcome: Outcome,
    seen: set[str],
    advance: Callable[[int], None],
) -> None:
    """Append one row a worker returned, unless that image was already recorded."""
    if kind == "note":
        outcome.notes.append(json.loads(line))
        return
    if kind == "failure":
        failure = Failure.from_json(json.loads(line))
        image, error = failure.image or "", failure.error or ""
        if image in seen:
            return
        seen.add(image)
        folder.fail(failure)
        outcome.failures.append((image, error))
    else:
        records = [ResultRecord.from_json(r) for r in json.loads(line)]
        key = records[0].key if records else None
        if key is None or key in seen:
            return
        seen.add(key)
        folder.add(records)
        outcome.explained += 1
        outcome.statuses.update(r.status or "ok" for r in records)
    advance(1)
