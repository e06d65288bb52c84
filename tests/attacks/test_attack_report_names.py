"""Attack suite: hostile file names through `camlens explain` and its report, in Chromium.

Real image files named to break out of the page (``<script>``, ``<svg onload>``,
``<img onerror>``, ``javascript:``, quotes that close an attribute, entities, a newline, a
255-byte name, bytes that are not UTF-8, a folder named with markup, ``..`` segments on the
command line, a missing one written as console markup) are explained by the installed command.
The report must run nothing (no dialog, no console error, no element or event-handler attribute
made from a name), show every name as text, link only to files in its own folder, and the run
must write nothing outside ``--out``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

from browser import find_broken_images, keep_artifact, report_page, require_browser
from nets import TrunkHead

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))

#: Names inside the scanned folder ``in/``, as the report must show them after ``../in/``.
#: A name cannot hold '/': ``</script>`` comes from a folder named ``<script>alert(1)<``.
SCANNED = (
    "<script>alert(1)</script>.png",
    "<svg onload=alert(2)>.png",
    "<img src=x onerror=alert(3)>.jpg",
    "javascript:alert(4).png",
    "new\nline<img src=x onerror=alert(5)>.png",
    'quote" onmouseover="alert(6)" x=\'.png',
    "&amp;&lt;script&gt;alert(7)&lt;.jpg",
    "#frag?q=%2e%2e%2f..%2Findex.html.png",
    "<i>" + "w" * 248 + ".png",  # 255 bytes: the file system's limit
    "é" * 125 + "a.png",  # 255 bytes of UTF-8
    '<b onmouseover=alert(8)>"folder&amp;/inside.png',  # a folder named with markup
    os.fsdecode(b"caf\xe9 <svg onload=alert(11)>.png"),  # not UTF-8: shown as caf\xe9
)
#: Files outside ``in/``, named on the command line with ``..`` segments (run from ``cwd/``).
NAMED = (
    "../loose/sub/../<svg onload=alert(9)>dotdot.png",
    "../loose/sub/../../loose/up.png",
    os.fsdecode(b"../loose/sub/../\xff\xfe<b>.png"),
)
#: A hostile name that is not an image: it is listed as a failure.
BROKEN = os.fsdecode(b"<img src=x onerror=alert(10)>broken\xff.png")
#: A name on the command line that matches nothing, written as rich console markup.
MISSING = "[/][link=javascript:alert(12)]missing[/link].png"

# Every element and attribute of the page that names a URL, and every attribute that runs code.
_LINKS_JS = """
() => Array.from(document.querySelectorAll("[href], [src], [srcset], [action], [formaction]"))
  .flatMap((el) => ["href", "src", "srcset", "action", "formaction"]
    .filter((name) => el.hasAttribute(name))
    .map((name) => new URL(el.getAttribute(name), document.baseURI).href))
"""
_HANDLERS_JS = """
() => Array.from(document.querySelectorAll("*")).flatMap((el) => Array.from(el.attributes)
  .filter((a) => /^on/i.test(a.name)).map((a) => el.tagName + " " + a.name))
"""


def _camlens() -> list[str]:
    exe = shutil.which("camlens", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "camlens.cli"]


def _tree(root: Path) -> set[str]:
    """Return every path under ``root`` (files, folders, links), relative to it."""
    return {os.path.relpath(p, root) for p in root.rglob("*")}


def _shown(name: str) -> str:
    """Return a name as camlens shows it: bytes that are not UTF-8 as ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _inputs(root: Path) -> list[str]:
    """Write the model and the hostile files under ``root``; return the names as given."""
    torch.export.save(
        torch.export.export(
            TrunkHead().eval(), (X,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
        ),
        root / "net.pt2",
    )
    (root / "cwd").mkdir()
    (root / "loose" / "sub").mkdir(parents=True)
    given = [*(f"../in/{name}" for name in SCANNED), *NAMED]
    for i, name in enumerate(given):
        path = root / "cwd" / name
        assert len(os.fsencode(path.name)) <= 255
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (20 * i % 256, 120, 200 - 15 * i)).save(
            path, format="JPEG" if path.suffix == ".jpg" else "PNG"
        )
    assert max(len(os.fsencode(Path(name).name)) for name in SCANNED) == 255
    (root / "in" / BROKEN).write_bytes(b"not a picture")
    return given


def test_hostile_names_run_nothing_and_stay_inside_the_folder(tmp_path: Path) -> None:
    require_browser()
    shown = [_shown(name) for name in _inputs(tmp_path)]
    before = _tree(tmp_path)
    proc = subprocess.run(
        [
            *_camlens(), "explain", "../net.pt2", "../in", *NAMED, MISSING, "--out", "out",
            "--size", "16", "-m", "gradcam", "-m", "layercam",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path / "cwd",
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr  # finished; the broken file failed
    assert "Traceback" not in proc.stderr
    assert f"warning: no such file, folder or match: {MISSING}" in proc.stderr  # as text
    assert f"failed: ../in/{_shown(BROKEN)}" in proc.stdout
    out = tmp_path / "cwd" / "out"

    # Nothing written outside --out; everything inside it has a plain, short name.
    after = _tree(tmp_path)
    assert {p for p in after - before if not p.startswith(f"cwd{os.sep}out")} == set()
    assert before <= after
    for path in out.rglob("*"):
        assert not path.is_symlink() and out.resolve() in path.resolve().parents
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", path.name), path.name
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted({r["image"] for r in records}) == sorted(shown)
    for record in records:
        for key in ("image_file", "overlay", "map", "arrays"):
            assert record[key].count("/") == 1 and (out / record[key]).is_file(), record[key]

    with report_page(out / "index.html") as (page, result):
        find_broken_images(page, result)
        titles = page.eval_on_selector_all(".image-cell .file", "spans => spans.map(s => s.title)")
        texts = page.eval_on_selector_all(".image-cell .file", "s => s.map(e => e.textContent)")
        alts = page.eval_on_selector_all(".image-cell img", "imgs => imgs.map(i => i.alt)")
        failed = page.eval_on_selector_all("#failures td.file", "c => c.map(e => e.textContent)")
        command = page.locator(".command code").text_content()
        counts = page.evaluate(
            "() => ({script: document.scripts.length, svg: document.querySelectorAll('svg').length,"
            " iframe: document.querySelectorAll('iframe, object, embed, frame').length})"
        )
        handlers = page.evaluate(_HANDLERS_JS)
        links = page.evaluate(_LINKS_JS)
        for name in page.locator(".image-cell .file, #failures td.file").all():
            name.hover()  # where a smuggled onmouseover would fire
        page.fill("#filter", "alert(")  # the names go through the filter's data too
        page.fill("#filter", "")
        shot = tmp_path / "hostile-names.png"
        page.screenshot(path=str(shot), full_page=True)
    keep_artifact(shot, "attack-hostile-names.png")

    assert result.dialogs == []
    assert result.ok, "\n".join(result.problems())
    assert sorted(titles) == sorted(shown) and sorted(texts) == sorted(shown)
    assert sorted(alts) == sorted(shown)
    assert failed == [f"../in/{_shown(BROKEN)}"]
    assert NAMED[0] in command and MISSING in command
    assert counts == {"script": 1, "svg": 0, "iframe": 0}
    assert handlers == []
    folder = out.resolve().as_uri() + "/"
    files = [url for url in links if not url.startswith(f"{folder}index.html#")]  # #failures
    assert [url for url in files if not url.startswith(folder)] == []
    assert len(files) == len(shown) * (2 + 2 * 3)  # thumbnail (a, img); per map a, img, map link
    for url in files:
        assert (out / url[len(folder) :]).is_file()  # the URLs are plain names, nothing to decode
