"""The output folder of `camlens explain`: files written as results come, and resuming a run.

Layout (every path relative to the folder; names come from :func:`camlens.io.image_key`, so
nothing is written outside it whatever the inputs are called):

- ``run.json``: the settings; a resumed run must have the same.
- ``results.jsonl`` / ``results.csv``: one line per (image, method, target) result, appended
  once the result's files are on disk; ``failures.jsonl``: one line per image that failed.
- ``images/<key>.jpg`` (the picture as shown), ``overlays/<key>__<method>.png``,
  ``maps/<key>__<method>.png`` (grayscale map), ``arrays/<key>__<method>.npz`` (``map``: the
  float map at the model's input size, ``raw``: the signed layer-resolution map), gathered into
  ``maps.npz`` at the end of each run.
- ``index.html``: the report (:func:`camlens.report.write_report`).

Every file is written whole or not at all (:func:`write_file`); a temporary file a killed run
leaves behind (only where the OS has no unnamed files) is removed when the next run starts.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

# The names the report reads the folder by.
from camlens.report._read import COHORT_FILE, COHORT_TILES, COMPARE_FILE
from camlens.report._read import FAILURES_FILE as FAILURES
from camlens.report._read import RESULTS_FILE as RESULTS
from camlens.report._read import RUN_FILE as RUN
from camlens.report._records import CSV_COLUMNS, Failure, ResultRecord, read_records

CSV = "results.csv"
NPZ = "maps.npz"
SUBFOLDERS = ("images", "overlays", "maps", "arrays")
#: The tables ``camlens compare`` writes beside its ``compare.json``.
COMPARE_CSV = "compare.csv"
COMPARE_MD = "compare.md"
#: The picture ``camlens cohort`` writes beside its ``cohort.json``.
COHORT_PNG = "cohort.png"
#: What ``--overwrite`` removes: every file camlens writes at the top of the folder.
OWN_FILES = (
    *(RESULTS, FAILURES, RUN, CSV, NPZ, "index.html"),
    *(COMPARE_FILE, COMPARE_CSV, COMPARE_MD, COHORT_FILE, COHORT_PNG),
)
#: Settings that must match for ``--resume`` to continue a run.
RESUME_KEYS = (
    "model",
    "methods",
    "layer",
    "target",
    "preprocess",
    "cmap",
    "alpha",
    "max_size",
    "normalize",
    "layer_layout",
    "grid",
    "method_options",
    "aug_smooth",
    "eigen_smooth",
    "region",
)
#: The value a setting had before it was recorded (a folder written by an earlier version).
SETTING_DEFAULTS: dict[str, Any] = {
    "normalize": "minmax",
    "layer_layout": "auto",
    "grid": None,
    "method_options": {},
    "aug_smooth": False,
    "eigen_smooth": False,
    "region": None,
}
#: The temporary files camlens's writers name: ``.<name>.<pid>.tmp`` (:func:`write_file`) and
#: ``.index-<random>.html.tmp`` (the report's writer).
TEMP_FILE = re.compile(r"\..+\.[0-9]+\.tmp|\.index-.+\.html\.tmp")
#: The names earlier versions wrote through: ``<name>.tmp``, and ``maps.npz.tmp.npz``.
LEGACY_TEMP_FILES = (*(f"{name}.tmp" for name in OWN_FILES), f"{NPZ}.tmp.npz")


class FolderError(Exception):
    """The output folder cannot be used as asked (holds another run, ...)."""


def row_id(key: str, method: str, rank: int) -> str:
    """Return the file-name stem of one result: ``<key>__<method>`` plus ``__t<rank>``."""
    safe_method = "".join(c if c.isalnum() or c in "+-_" else "_" for c in method)
    return f"{key}__{safe_method}" + (f"__t{rank}" if rank else "")


class OutputFolder:
    """Writes one run's outputs as they are produced; knows which results already exist."""

    def __init__(self, root: Path, settings: dict[str, Any], *, resume: bool, overwrite: bool):
        """Prepare ``root`` for a run: new, resumed (same settings) or overwritten."""
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        has_run = (root / RUN).exists() or (root / RESULTS).exists()
        if has_run and overwrite:
            self._clear()
        elif has_run and not resume:
            raise FolderError(
                f"{root} already holds camlens results; pass --resume to continue that run or "
                "--overwrite to start again"
            )
        remove_temp_files(root)
        self.done: dict[str, frozenset[str]] = {}
        if has_run and resume and not overwrite:
            self._check_settings(settings)
            self._load_existing()
        else:
            for name in (RESULTS, FAILURES, CSV):
                (root / name).unlink(missing_ok=True)
        for sub in SUBFOLDERS:
            (root / sub).mkdir(exist_ok=True)
        write_file(root / RUN, json.dumps(settings, indent=2).encode())
        if not (root / CSV).exists():
            with (root / CSV).open("w", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, CSV_COLUMNS).writeheader()
        self._results = (root / RESULTS).open("a", encoding="utf-8")
        self._csv = (root / CSV).open("a", newline="", encoding="utf-8")
        self._failures = (root / FAILURES).open("a", encoding="utf-8")
        self._lock = threading.Lock()  # the reader and the writer threads both record failures

    def _clear(self) -> None:
        """Remove a previous run's files (only camlens's own; other files are left alone)."""
        for name in OWN_FILES:
            (self.root / name).unlink(missing_ok=True)
        for sub in (*SUBFOLDERS, COHORT_TILES):
            shutil.rmtree(self.root / sub, ignore_errors=True)

    def _check_settings(self, settings: dict[str, Any]) -> None:
        """Refuse to resume a run made with other settings."""
        try:
            previous = json.loads((self.root / RUN).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FolderError(f"cannot resume: {self.root / RUN} is unreadable ({exc})") from exc
        differ = [
            k
            for k in RESUME_KEYS
            if previous.get(k, SETTING_DEFAULTS.get(k)) != settings.get(k, SETTING_DEFAULTS.get(k))
        ]
        if differ:
            detail = "; ".join(f"{k}: {previous.get(k)!r} -> {settings.get(k)!r}" for k in differ)
            raise FolderError(
                f"cannot resume: {self.root} holds a run with other settings ({detail}); use "
                "another --out, the same options, or --overwrite"
            )

    def _load_existing(self) -> None:
        """Keep the complete results of a previous run; drop a torn last line and partial images.

        An image counts as done when every method has all its rows; its rows are kept (and the
        CSV rebuilt from them). Failed images are tried again.
        """
        records, _ = read_records(self.root / RESULTS, ResultRecord)
        by_image: dict[str | None, list[ResultRecord]] = {}
        for record in records:
            by_image.setdefault(record.key, []).append(record)
        kept: list[ResultRecord] = []
        for key, rows in by_image.items():
            methods = self._complete_methods(rows)
            if key is not None and methods is not None:
                self.done[key] = methods
                kept.extend(rows)
        write_file(self.root / RESULTS, b"".join(_json_line(r) for r in kept))
        text = io.StringIO()
        writer = csv.DictWriter(text, CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(r.to_csv() for r in kept)
        write_file(self.root / CSV, text.getvalue().encode())
        (self.root / FAILURES).unlink(missing_ok=True)

    def _complete_methods(self, rows: list[ResultRecord]) -> frozenset[str] | None:
        """Return the methods of one image's rows if they are complete, else None (redone).

        Complete: every row names its method, rank, number of targets and files, each method
        has a row for each of its targets, and every file is on disk.
        """
        ranks: dict[str, set[int]] = {}
        totals: dict[str, int] = {}
        for row in rows:
            if row.method is None or row.rank is None or row.targets is None:
                return None
            if not all(f is not None and self.has_file(f) for f in row.files):
                return None
            ranks.setdefault(row.method, set()).add(row.rank)
            totals[row.method] = row.targets
        if any(len(ranks[method]) != total for method, total in totals.items()):
            return None
        return frozenset(totals)

    def has_file(self, name: str) -> bool:
        """Return whether the folder holds the file ``name`` (relative to it)."""
        return (self.root / name).exists()

    def open_file(self, name: str) -> BinaryIO | Path:
        """Return the file ``name`` (relative to the folder), for :func:`numpy.load`."""
        return self.root / name

    def methods_done(self, key: str) -> frozenset[str]:
        """Return the methods whose results for image ``key`` are complete on disk."""
        return self.done.get(key, frozenset())

    def add(self, records: Iterable[ResultRecord]) -> None:
        """Append one image's results (their files already written) to the JSONL and CSV."""
        records = list(records)
        with self._lock:
            self._results.write(b"".join(_json_line(r) for r in records).decode())
            self._results.flush()
            csv.DictWriter(self._csv, CSV_COLUMNS).writerows(r.to_csv() for r in records)
            self._csv.flush()

    def fail(self, failure: Failure) -> None:
        """Record an image that could not be read or explained."""
        with self._lock:
            self._failures.write(json.dumps(failure.to_json()) + "\n")
            self._failures.flush()

    def gather_arrays(self) -> Path:
        """Write ``maps.npz`` from every complete result's arrays; return its path."""
        records, _ = read_records(self.root / RESULTS, ResultRecord)
        arrays: dict[str, np.ndarray] = {}
        for name in (r.arrays for r in records if r.arrays is not None):
            with np.load(self.open_file(name)) as data:
                stem = Path(name).stem
                arrays[f"{stem}/map"] = data["map"]
                arrays[f"{stem}/raw"] = data["raw"]
                if "region" in data.files:  # --region: the image's mask at the input size
                    arrays[f"{stem}/region"] = data["region"]
        replace_file(self.root / NPZ, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
        return self.root / NPZ

    def close(self) -> None:
        """Close the appended files."""
        for f in (self._results, self._csv, self._failures):
            f.close()


def _json_line(record: ResultRecord) -> bytes:
    return (json.dumps(record.to_json(), ensure_ascii=False) + "\n").encode("utf-8")


def write_file(path: Path, data: bytes) -> None:
    """Write a file atomically (a killed run never leaves half a picture or table)."""
    replace_file(path, lambda f: f.write(data))


def replace_file(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Put in place at ``path`` the file ``write`` writes to the binary file it is given.

    Readers see the old file or the new one, never a part. On Linux the data goes to an unnamed
    file in the same folder (``O_TMPFILE``), which a kill (even SIGKILL) leaves nothing of; it is
    given the name ``.<name>.<pid>.tmp`` only to be renamed onto ``path`` in the next system
    call. Elsewhere (or where the file system has no unnamed files) it is written under that
    name; a kill then leaves it, and the next run removes it (:func:`remove_temp_files`).
    ``write`` may be called twice (once for each way). Nothing is synced to disk, so this guards
    against a killed process, not a power cut.
    """
    temp = f".{path.name}.{os.getpid()}.tmp"
    if _replace_through_unnamed_file(path, temp, write):
        return
    named = path.with_name(temp)
    try:
        # A stale file of that name (or a link planted there) is replaced, never written through.
        named.unlink(missing_ok=True)
        with named.open("xb") as f:
            write(f)
        os.replace(named, path)
    except BaseException:
        named.unlink(missing_ok=True)
        raise


def _replace_through_unnamed_file(
    path: Path, temp: str, write: Callable[[BinaryIO], object]
) -> bool:
    """Write ``path`` through an unnamed file; return False where the OS cannot make one."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return False
    try:
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False  # the named way reports a missing folder
    try:
        try:
            fd = os.open(".", flag | os.O_WRONLY, 0o666, dir_fd=folder)
        except OSError:  # EOPNOTSUPP (the file system), EISDIR (a kernel before 3.11), ...
            return False
        with open(fd, "wb") as f:
            write(f)
            f.flush()
            try:
                # The documented way to name an O_TMPFILE file: linkat(AT_SYMLINK_FOLLOW) of
                # its /proc/self/fd link (os.link only passes that flag given a dir_fd).
                os.link(f"/proc/self/fd/{fd}", temp, dst_dir_fd=folder, follow_symlinks=True)
            except OSError:  # no /proc, a stale file of that name, ...
                return False
        try:
            os.replace(temp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=folder)
            raise
        return True
    finally:
        os.close(folder)


def remove_temp_files(root: Path) -> None:
    """Remove the temporary files a killed run left in ``root`` and its subfolders.

    Only names camlens's writers give (:data:`TEMP_FILE`, :data:`LEGACY_TEMP_FILES`; any
    ``*.tmp`` in the subfolders, which camlens owns) are removed; other files are left alone.
    """
    for name in LEGACY_TEMP_FILES:
        (root / name).unlink(missing_ok=True)
    for folder in (root, *(root / sub for sub in SUBFOLDERS)):
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            own = folder != root and entry.name.endswith(".tmp")
            if (own or TEMP_FILE.fullmatch(entry.name)) and not entry.is_dir(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)
