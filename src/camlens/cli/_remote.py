"""Images and output folders at fsspec URLs (``s3://bucket/run``, ``memory://``, ``file://``).

`camlens explain` takes an image argument or ``--out`` that is a URL through fsspec (it comes
with ``pip install 'camlens[ray]'``; S3 also needs s3fs). The folder at the URL has exactly the
layout of a local output folder (:mod:`camlens.cli._folder`):

- The driver is the only writer of the tables. :class:`RemoteFolder` is the local
  :class:`~camlens.cli._folder.OutputFolder` working in a local staging folder, seeded from the
  URL's ``run.json`` and ``results.jsonl`` (so ``--resume`` works from the URL), that uploads
  the tables every ``sync_every`` seconds and at the end, then ``maps.npz`` and ``index.html``.
- The per-image files are written by whoever explains the image (a Ray worker, or the command
  itself): :func:`explain_staged` runs the batch into a scratch folder, then publishes the
  files to the URL before the image's records are returned, so a table at the URL never names
  a file that is not there. An image read from a URL is downloaded to the scratch folder first
  and recorded under its URL and :func:`url_key`.

Only this module imports fsspec, and only when a URL is given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from camlens.cli._folder import (
    CSV,
    NPZ,
    OWN_FILES,
    SUBFOLDERS,
    FolderError,
    OutputFolder,
    write_file,
)
from camlens.io import image_key
from camlens.io._images import IMAGE_EXTENSIONS
from camlens.report._read import FAILURES_FILE as FAILURES
from camlens.report._read import RESULTS_FILE as RESULTS
from camlens.report._read import RUN_FILE as RUN
from camlens.report._records import Failure, ResultRecord

#: A URL's start: a scheme and ``://`` (``s3://``, ``gs://``, ``memory://``, ``file://``).
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
#: The tables the driver uploads while the run goes on.
TABLES = (RUN, RESULTS, CSV, FAILURES)
_GLOB_CHARS = re.compile(r"[*?\[]")


def is_url(text: object) -> bool:
    """Return whether ``text`` is a URL string (a scheme and ``://``), not a local path."""
    return isinstance(text, str) and URL.match(text) is not None


def filesystem(url: str) -> tuple[Any, str]:
    """Return the fsspec filesystem of ``url`` and the path in it (no trailing slash).

    Raises:
        click.ClickException: fsspec, or the filesystem's own package, is not installed.
    """
    try:
        import fsspec  # type: ignore[import-untyped]
    except ImportError as exc:
        raise click.ClickException(
            f"{url}: a URL needs fsspec: pip install 'camlens[ray]' (and s3fs for s3://)"
        ) from exc
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise click.ClickException(f"{url}: cannot open this URL ({exc})") from exc
    return fs, str(path).rstrip("/") or "/"


def url_key(url: str) -> str:
    """Return an image URL's key: as :func:`camlens.io.image_key`, hashing the URL as given."""
    stem = image_key(url.rstrip("/").rsplit("/", 1)[-1]).rsplit("-", 1)[0]
    return f"{stem}-{hashlib.sha1(url.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def key_of(image: Path | str) -> str:
    """Return the key of an image path or URL."""
    return url_key(image) if isinstance(image, str) and is_url(image) else image_key(image)


def find_urls(sources: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """Expand image URLs as :func:`camlens.io.find_images` expands paths.

    A file is taken whatever its name; a folder is searched recursively and a glob pattern
    expanded, keeping files with an image extension (the others are ignored).

    Returns:
        The image URLs (each once), the ignored URLs and the sources that matched nothing.
    """
    images: list[str] = []
    ignored: list[str] = []
    missing: list[str] = []
    seen: set[str] = set()
    for source in sources:
        fs, path = filesystem(source)
        if fs.isfile(path):
            found = [(path, True)]
        elif fs.isdir(path):
            found = [(p, False) for p in sorted(fs.find(path))]
        elif _GLOB_CHARS.search(path):
            found = [(p, False) for p in sorted(fs.glob(path)) if fs.isfile(p)]
        else:
            found = []
        if not found:
            missing.append(source)
        for p, explicit in found:
            url = fs.unstrip_protocol(p)
            if url in seen:
                continue
            seen.add(url)
            is_image = explicit or Path(p).suffix.lower() in IMAGE_EXTENSIONS
            (images if is_image else ignored).append(url)
    return images, ignored, missing


class Store:
    """Writes files into an output folder given as a URL or a local path."""

    def __init__(self, root: str) -> None:
        """Write under ``root``; a URL's subfolders are made (where its filesystem has them)."""
        self.root = root
        self.fs: Any = None
        self.path = root
        if is_url(root):
            self.fs, self.path = filesystem(root)

    def write(self, name: str, data: bytes) -> None:
        """Write the file ``name`` (relative to the folder) whole."""
        if self.fs is None:
            write_file(Path(self.root) / name, data)
        else:
            self.fs.pipe_file(f"{self.path}/{name}", data)


class RemoteFolder(OutputFolder):
    """An output folder at a URL: the tables kept in a local staging folder and uploaded."""

    def __init__(
        self,
        url: str,
        settings: dict[str, Any],
        *,
        resume: bool,
        overwrite: bool,
        sync_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Prepare the folder at ``url`` as :class:`OutputFolder` prepares a local one."""
        self.url = url
        self.fs, self.path = filesystem(url)
        self.sync_every = sync_every
        self.clock = clock
        self._synced = clock()
        self.staging = Path(tempfile.mkdtemp(prefix="camlens-staging-"))
        try:
            self.present = self._listing()
            has_run = RUN in self.present or RESULTS in self.present
            if has_run and overwrite:
                self._clear_remote()
            elif has_run and resume:
                for name in (RUN, RESULTS):
                    if name in self.present:
                        (self.staging / name).write_bytes(self.fs.cat_file(f"{self.path}/{name}"))
            elif has_run:
                (self.staging / RUN).write_text("{}")  # the local check then refuses it
            super().__init__(self.staging, settings, resume=resume, overwrite=overwrite)
            for sub in SUBFOLDERS:
                self.fs.makedirs(f"{self.path}/{sub}", exist_ok=True)
            self.sync()
        except FolderError as exc:
            self.discard()
            raise FolderError(str(exc).replace(str(self.staging), url)) from exc
        except BaseException:
            self.discard()
            raise

    def _listing(self) -> set[str]:
        """Return the names of the files under the URL, relative to it."""
        if not self.fs.isdir(self.path):
            return set()
        prefix = self.path.rstrip("/") + "/"
        return {str(p)[len(prefix) :] for p in self.fs.find(self.path) if str(p).startswith(prefix)}

    def _clear_remote(self) -> None:
        """Remove a previous run's files at the URL (only camlens's own)."""
        for name in OWN_FILES:
            if name in self.present:
                self.fs.rm_file(f"{self.path}/{name}")
        for sub in SUBFOLDERS:
            if self.fs.exists(f"{self.path}/{sub}"):
                self.fs.rm(f"{self.path}/{sub}", recursive=True)
        self.present = set()

    def has_file(self, name: str) -> bool:
        """Return whether the file ``name`` was at the URL when the run started."""
        return name in self.present

    def open_file(self, name: str) -> io.BytesIO:
        """Return the file ``name`` at the URL, read into memory."""
        return io.BytesIO(self.fs.cat_file(f"{self.path}/{name}"))

    def add(self, records: Iterable[ResultRecord]) -> None:
        """Append one image's results; upload the tables if ``sync_every`` has passed."""
        super().add(records)
        self._sync_if_due()

    def fail(self, failure: Failure) -> None:
        """Record a failed image; upload the tables if ``sync_every`` has passed."""
        super().fail(failure)
        self._sync_if_due()

    def _sync_if_due(self) -> None:
        if self.clock() - self._synced >= self.sync_every:
            self.sync()

    def sync(self, names: Sequence[str] = TABLES) -> None:
        """Upload the staged files ``names`` (those that exist) to the URL."""
        for name in names:
            if (self.staging / name).exists():
                self.fs.put_file(str(self.staging / name), f"{self.path}/{name}")
        self._synced = self.clock()

    def close(self) -> None:
        """Close the tables and upload them."""
        super().close()
        self.sync()

    def finish(self, report: Path) -> str:
        """Upload ``maps.npz`` and the report written in the staging folder; return its URL."""
        self.sync([NPZ, report.name])
        return f"{self.url.rstrip('/')}/{report.name}"

    def discard(self) -> None:
        """Remove the staging folder."""
        shutil.rmtree(self.staging, ignore_errors=True)


def explain_staged(
    paths: Sequence[str],
    store: Store,
    explain: Callable[
        [list[Path], Path], tuple[list[list[ResultRecord]], list[Failure], list[str]]
    ],
) -> tuple[list[list[ResultRecord]], list[Failure], list[str]]:
    """Explain a batch through a scratch folder; publish its files to ``store``.

    ``explain(local_paths, scratch_out)`` runs the batch with its files written under
    ``scratch_out`` and returns each image's records, the failures and the notes. URL inputs
    are downloaded first and their results renamed to their URL and :func:`url_key`. Files are
    published before the records are returned.
    """
    with tempfile.TemporaryDirectory(prefix="camlens-scratch-") as scratch:
        root = Path(scratch)
        out = root / "out"
        for sub in SUBFOLDERS:
            (out / sub).mkdir(parents=True)
        local, urls, failures = _download(paths, root / "in")
        results, failed, notes = explain(local, out)
        renamed = [[_renamed(r, urls) for r in records] for records in results]
        published: set[str] = set()
        for before, after in zip(results, renamed, strict=True):
            for old, new in zip(before, after, strict=True):
                for source, target in zip(old.files, new.files, strict=True):
                    if source is not None and target is not None and target not in published:
                        store.write(target, (out / source).read_bytes())
                        published.add(target)
        failures += [_renamed_failure(f, urls) for f in failed]
        notes = [_replaced(note, urls) for note in notes]
    return renamed, failures, notes


def _download(
    paths: Sequence[str], folder: Path
) -> tuple[list[Path], dict[str, str], list[Failure]]:
    """Copy the URL inputs into ``folder``; return the paths to read, each copy's URL, failures."""
    local: list[Path] = []
    urls: dict[str, str] = {}
    failures: list[Failure] = []
    for i, path in enumerate(paths):
        if not is_url(path):
            local.append(Path(path))
            continue
        fs, inner = filesystem(path)
        copy = folder / str(i) / (Path(inner).name or "image")
        copy.parent.mkdir(parents=True)
        try:
            copy.write_bytes(fs.cat_file(inner))
        except Exception as exc:  # the filesystem's own error (missing, denied, network)
            failures.append(
                Failure(image=path, error=f"{path}: cannot be read ({type(exc).__name__}: {exc})")
            )
            continue
        local.append(copy)
        urls[str(copy)] = path
    return local, urls, failures


def _renamed(record: ResultRecord, urls: dict[str, str]) -> ResultRecord:
    """Return a record of a downloaded copy under its URL and the URL's key."""
    url = urls.get(record.image or "")
    if url is None or record.key is None:
        return record
    old, new = record.key, url_key(url)

    def rename(name: str | None) -> str | None:
        if name is None:
            return None
        folder, _, file = name.rpartition("/")
        return f"{folder}/{new}{file[len(old) :]}" if file.startswith(old) else name

    return dataclasses.replace(
        record,
        image=url,
        key=new,
        image_file=rename(record.image_file),
        overlay=rename(record.overlay),
        map=rename(record.map),
        arrays=rename(record.arrays),
    )


def _renamed_failure(failure: Failure, urls: dict[str, str]) -> Failure:
    """Return a downloaded copy's failure under its URL."""
    url = urls.get(failure.image or "")
    if url is None:
        return failure
    return Failure(image=url, error=_replaced(failure.error or "", urls))


def _replaced(text: str, urls: dict[str, str]) -> str:
    """Return ``text`` with each downloaded copy's path replaced by its URL."""
    for copy, url in urls.items():
        text = text.replace(copy, url)
    return text
