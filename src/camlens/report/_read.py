"""Read the folder `camlens explain` writes, tolerating a run that is still being written."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camlens.errors import BadInputError
from camlens.report._records import Failure, ResultRecord, read_records

__all__ = ["RunFolder", "read_folder"]

RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
FAILURES_FILE = "failures.jsonl"
COMPARE_FILE = "compare.json"
COHORT_FILE = "cohort.json"
#: The subfolder of the cohort's tiles (each shown group's mean map, on one colour scale).
COHORT_TILES = "cohort"


@dataclass(frozen=True)
class RunFolder:
    """What an output folder holds.

    Attributes:
        path: The folder.
        run: The run settings (``run.json``), as plain JSON values.
        results: One record per result row (``results.jsonl``), later duplicates of the same
            (image, method, rank) dropped in favour of the last one written.
        failures: One record per image that could not be explained (``failures.jsonl``).
        compare: The ``compare.json`` table (``{"columns": [...], "rows": [[...]]}``), if any.
        cohort: What ``camlens cohort`` wrote (``cohort.json``), if any, as plain JSON values.
        notes: Human-readable remarks about lines or files that were skipped.
    """

    path: Path
    run: dict[str, Any]
    results: list[ResultRecord]
    failures: list[Failure]
    compare: dict[str, Any] | None
    cohort: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def read_folder(folder: Path) -> RunFolder:
    """Read ``folder``'s run settings, results, failures, comparison table and cohort.

    Lines of a JSONL file that are not a complete JSON object (a run interrupted mid-line, or a
    line being written right now) are skipped and counted in `RunFolder.notes`.

    Raises:
        BadInputError: If ``folder`` is not a directory or has no readable ``run.json``.
    """
    if not folder.is_dir():
        raise BadInputError(
            f"{str(folder)!r} is not a folder; pass the folder `camlens explain` wrote"
        )
    run_path = folder / RUN_FILE
    try:
        run = json.loads(run_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(
            f"{str(folder)!r} has no {RUN_FILE}; pass the folder `camlens explain` wrote"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInputError(f"cannot read {str(run_path)!r}: {error}") from None
    if not isinstance(run, dict):
        raise BadInputError(f"{str(run_path)!r} holds {type(run).__name__}; expected an object")

    notes: list[str] = []
    results, skipped_results = read_records(folder / RESULTS_FILE, ResultRecord)
    failures, skipped_failures = read_records(folder / FAILURES_FILE, Failure)
    for name, skipped in ((RESULTS_FILE, skipped_results), (FAILURES_FILE, skipped_failures)):
        if skipped:
            lines = "line" if skipped == 1 else "lines"
            notes.append(f"{skipped} incomplete or unreadable {lines} in {name} skipped")
    compare = _read_compare(folder / COMPARE_FILE, notes)
    cohort = _read_cohort(folder / COHORT_FILE, notes)
    return RunFolder(folder, run, _latest_per_result(results), failures, compare, cohort, notes)


def _latest_per_result(rows: list[ResultRecord]) -> list[ResultRecord]:
    """Keep one row per (image, method, rank): the last written (a resumed run may repeat)."""
    latest: dict[tuple[str | None, str | None, int | None], ResultRecord] = {}
    for row in rows:
        latest[(row.image_id, row.method, row.rank)] = row  # the first position is kept
    return list(latest.values())


#: What :func:`_read_json` returns for a file that is absent or unreadable (a file may hold null).
_NOTHING = object()


def _read_json(path: Path, notes: list[str], part: str) -> Any:
    """Return a JSON file's value, or :data:`_NOTHING`: absent, or unreadable (then with a note
    that the report's ``part`` is left out)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _NOTHING
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        notes.append(f"{path.name} is unreadable; {part} left out")
        return _NOTHING


def _read_compare(path: Path, notes: list[str]) -> dict[str, Any] | None:
    """Return the comparison table, or None (with a note if the file exists but is unusable)."""
    table = _read_json(path, notes, "comparison table")
    if table is _NOTHING:
        return None
    if (
        not isinstance(table, dict)
        or not isinstance(table.get("columns"), list)
        or not isinstance(table.get("rows"), list)
        or not all(isinstance(row, list) for row in table["rows"])
    ):
        notes.append(f"{path.name} is not a {{columns, rows}} table; comparison table left out")
        return None
    return table


def _read_cohort(path: Path, notes: list[str]) -> dict[str, Any] | None:
    """Return ``cohort.json``'s object, or None (with a note if the file exists but is unusable).

    Only its shape is checked here (an object with an ``overall`` object); the report reads each
    figure tolerantly, so an older file shows what it holds.
    """
    data = _read_json(path, notes, "cohort section")
    if data is _NOTHING:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("overall"), dict):
        notes.append(f"{path.name} is not what `camlens cohort` writes; cohort section left out")
        return None
    return data
