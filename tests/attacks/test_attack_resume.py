"""Attack suite: `camlens explain` killed (SIGKILL) at chosen points, then ``--resume``.

Each kill lands at a known point: a small wrapper runs the command in-process with one hook
that, at the n-th call of a function the run goes through, says so on stdout and waits to be
killed (the library itself has no switch for this). The resumed run, through the installed
command, must give what one uninterrupted run gives: the same images, no duplicate
``(key, method, rank)`` row, the same maps, the same failures, a report with the same rows, and
no temporary file left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nets import TrunkHead

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
IMAGES = 24
BROKEN = "img07-broken.png"
# One image per model call: every map is then computed as in the uninterrupted run, to the bit
# (a resumed run's batches start at other images).
OPTIONS = ["-m", "gradcam", "-m", "layercam", "--target", "topk:2", "--size", "16"]
OPTIONS += ["--batch-size", "1"]
ROWS = (IMAGES - 1) * 2 * 2  # images that can be read, x methods x targets

# Runs `camlens explain` (argv[4:]) in this process; at the argv[2]-th call of the hook named
# argv[1] it prints "stopped" and waits for the kill, having written half of the file or line
# it was writing (but for "read"). argv[3] "named": as on an OS without unnamed files.
_STOPPER = r"""
import io, json, os, sys, tempfile, threading
import numpy as np
import camlens.cli._run as run
import camlens.cli._folder as folder
import camlens.report
from camlens.cli import main

point, count = sys.argv[1], int(sys.argv[2])
if sys.argv[3] == "named":
    vars(os).pop("O_TMPFILE", None)
calls = []
lock = threading.Lock()

def reached():
    with lock:
        calls.append(None)
        return len(calls) == count

def stop():
    print("stopped", flush=True)
    threading.Event().wait()

if point == "read":  # reading an image
    read = run.read_image_and_notes
    def hook(path, **kwargs):
        if reached():
            stop()
        return read(path, **kwargs)
    run.read_image_and_notes = hook
elif point == "overlay":  # writing an overlay PNG
    write = run.write_file
    def hook(path, data):
        if path.parent.name == "overlays" and reached():
            def half(f):
                f.write(data[: len(data) // 2])
                f.flush()
                stop()
            folder.replace_file(path, half)
        write(path, data)
    run.write_file = hook
elif point == "line":  # appending an image's rows to results.jsonl
    add = folder.OutputFolder.add
    def hook(self, records):
        records = list(records)
        if reached():
            line = json.dumps(records[0].to_json())
            with open(self.root / folder.RESULTS, "a") as f:
                f.write(line[: len(line) // 2])
            stop()
        add(self, records)
    folder.OutputFolder.add = hook
elif point == "npz":  # gathering maps.npz, at the end
    savez = np.savez
    def hook(file, *args, **kwargs):
        if isinstance(file, io.BytesIO):  # one result's arrays
            return savez(file, *args, **kwargs)
        buffer = io.BytesIO()
        savez(buffer, *args, **kwargs)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        file.flush()
        stop()
    np.savez = hook
elif point == "report":  # writing index.html (through a temporary file), at the very end
    render, mkstemp, pages = camlens.report.render_html, tempfile.mkstemp, []
    def hook(*args, **kwargs):
        pages.append(render(*args, **kwargs))
        return pages[-1]
    def temp_hook(*args, **kwargs):
        fd, name = mkstemp(*args, **kwargs)
        if pages and reached():
            os.write(fd, pages[-1][: len(pages[-1]) // 2].encode())
            stop()
        return fd, name
    camlens.report.render_html, tempfile.mkstemp = hook, temp_hook
else:
    raise SystemExit(f"no hook {point!r}")
sys.argv = ["camlens", *sys.argv[4:]]
main()
"""

#: (hook, n-th call, temporary files): before any result; mid-run, reading, writing an image's
#: files or its rows; the two writes at the end.
KILLS = {
    "first read": ("read", 1, "unnamed"),
    "mid-run read": ("read", 9, "unnamed"),
    "overlay half written": ("overlay", 27, "unnamed"),
    "overlay half written, named temp file": ("overlay", 27, "named"),
    "results line torn": ("line", 15, "unnamed"),
    "maps.npz half written": ("npz", 1, "unnamed"),
    "report half written": ("report", 1, "unnamed"),
}


def _camlens() -> list[str]:
    exe = shutil.which("camlens", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "camlens.cli"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the model (``net.pt2``) and ``in/``: 23 tiny images and a broken one."""
    root = tmp_path_factory.mktemp("resume")
    program = torch.export.export(
        TrunkHead().eval(), (X,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
    )
    torch.export.save(program, root / "net.pt2")
    (root / "in").mkdir()
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        path = root / "in" / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(path)
    (root / "in" / "img07.png").rename(root / "in" / BROKEN)
    (root / "in" / BROKEN).write_bytes(b"\x89PNG\r\n\x1a\n but not a picture")
    return root


def _explain(root: Path, out: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_camlens(), "explain", "net.pt2", "in", "--out", out, *OPTIONS, *extra],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.fixture(scope="module")
def clean(inputs: Path) -> Path:
    """One uninterrupted run's folder."""
    proc = _explain(inputs, "clean")
    assert proc.returncode == 3, proc.stderr  # finished; the broken image failed
    return inputs / "clean"


def _kill_at(root: Path, out: str, point: str, count: int, temp: str) -> None:
    """Run the command under :data:`_STOPPER` and SIGKILL it once it stops at the hook."""
    command = ["explain", "net.pt2", "in", "--out", out, *OPTIONS]
    proc = subprocess.Popen(
        [sys.executable, "-c", _STOPPER, point, str(count), temp, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "stopped", or "" if the run ended first
        while line and line != "stopped\n":  # the run's own output before the stop
            line = proc.stdout.readline()
        assert line == "stopped\n", f"the run ended before the {point} hook: {proc.wait()}"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.communicate()


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _failures(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]


class _ReportRows(HTMLParser):
    """Collect each grid row's image name and the files it links, in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "span" and values.get("class") == "file":
            self.rows.append((str(values.get("title")), []))
        elif self.rows and tag in ("a", "img") and "#" not in (values.get("href") or ""):
            self.rows[-1][1].append(str(values.get("href") or values.get("src")))


def _report(out: Path) -> list[tuple[str, list[str]]]:
    parser = _ReportRows()
    parser.feed((out / "index.html").read_text(encoding="utf-8"))
    return parser.rows


def _temp_files(out: Path) -> list[str]:
    return sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.name.endswith((".tmp", ".tmp.npz")) or p.name.startswith(".")
    )


@pytest.mark.parametrize("where", list(KILLS))
def test_a_kill_then_resume_gives_the_uninterrupted_outputs(
    where: str, inputs: Path, clean: Path
) -> None:
    point, count, temp = KILLS[where]
    out = inputs / f"killed-{point}-{count}-{temp}"
    _kill_at(inputs, out.name, point, count, temp)
    left = _temp_files(out)  # what the next run must remove
    if point == "report":
        assert any(re.fullmatch(r"\.index-.+\.html\.tmp", name) for name in left), left
    elif temp == "named":
        assert any(re.fullmatch(r"overlays/\..+\.png\.[0-9]+\.tmp", name) for name in left), left
    complete = (out / "results.jsonl").read_bytes().splitlines(True)
    done = sum(line.endswith(b"\n") for line in complete)
    if point in ("npz", "report"):
        assert done == ROWS  # every result was in before the kill
    elif count == 1:
        assert done == 0
    else:
        assert 0 < done < ROWS, done  # the kill landed mid-run
    if point == "line":
        assert not complete[-1].endswith(b"\n")  # a torn last line

    resumed = _explain(inputs, out.name, "--resume")
    assert resumed.returncode == 3, resumed.stderr
    assert "Traceback" not in resumed.stderr

    a, b = _rows(clean), _rows(out)
    ids = Counter((r["key"], r["method"], r["rank"]) for r in b)
    assert [row for row, n in ids.items() if n > 1] == []  # no duplicate
    assert set(ids) == {(r["key"], r["method"], r["rank"]) for r in a}  # none lost
    assert len(b) == len(a) == ROWS
    same = [{k: v for k, v in r.items() if k != "seconds"} for r in a]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in b] == same
    assert _failures(out) == _failures(clean) and len(_failures(out)) == 1
    with np.load(clean / "maps.npz") as wa, np.load(out / "maps.npz") as wb:
        assert sorted(wa.files) == sorted(wb.files) and len(wa.files) == 2 * ROWS
        for name in wa.files:
            np.testing.assert_allclose(wb[name], wa[name], atol=1e-6, rtol=0)
    for record in a:
        for key in ("overlay", "map", "image_file"):
            assert (out / record[key]).read_bytes() == (clean / record[key]).read_bytes()
    assert _report(out) == _report(clean) and len(_report(out)) == IMAGES - 1
    # The writers leave nothing behind once the resumed run is over (see test_attack_small).
    assert _temp_files(out) == []
