"""camlens.report.write_report on synthetic output folders: content, escaping, robustness."""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

import camlens
from camlens.report import write_report
from run_folder import make_run_folder

COMPARE = {
    "columns": ["method", "deletion_auc", "insertion_auc"],
    "rows": [["gradcam", 0.123456, 0.7], ["layercam", 0.2, None]],
}


class _Page(HTMLParser):
    """Collect a page's links, image sources, text and script blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.text: list[str] = []
        self.scripts = 0
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "img":
            self.images.append(attributes)
        if tag == "script":
            self.scripts += 1
        for name in ("href", "src"):
            value = attributes.get(name)
            if value is not None:
                self.links.append(value)

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _rows(page: _Page) -> list[dict[str, str | None]]:
    return [attrs for tag, attrs in page.tags if tag == "tr" and "data-search" in attrs]


def test_report_shows_settings_and_one_row_per_image(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run")
    path = write_report(folder, title="Cats and coffee")
    assert path == folder / "index.html"
    page = _parse(path)
    text = " ".join(page.text)
    for expected in (
        "Cats and coffee",
        "TinyNet (synthetic)",
        "features",
        "top1",
        "imagenet",
        "0.0.test",
        "2025-11-29 22:59 UTC",
        "gradcam",
        "layercam",
        "cats/tabby.jpg",
        "tabby, tabby cat",
        "83.3%",  # coffee.jpg's probability 0.5 + 2 / 6
        "logit 12.1",  # coffee.jpg, layercam
    ):
        assert expected in text, expected
    rows = _rows(page)
    assert [r["data-k1"] for r in rows] == ["cats/tabby.jpg", "dogs/beagle.png", "coffee.jpg"]
    assert len(page.images) == 3 * 3  # a thumbnail and two overlays per image
    assert all(img["loading"] == "lazy" for img in page.images)
    assert page.scripts == 1


def test_colour_bar_is_an_inline_gradient_of_the_colormap(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run")
    html = write_report(folder).read_text(encoding="utf-8")
    gradient = re.search(
        r'class="colorbar"[^>]*style="background: linear-gradient\(([^"]*)\)"', html
    )
    assert gradient is not None
    stops = re.findall(r"rgb\((\d+), (\d+), (\d+)\)", gradient.group(1))
    expected = camlens.render.colorize([[0.0, 1.0]], "jet")[0].tolist()
    assert [int(c) for c in stops[0]] == expected[0]  # jet: dark blue ...
    assert [int(c) for c in stops[-1]] == expected[1]  # ... to dark red


def test_unknown_colormap_leaves_the_colour_bar_out(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run")
    run = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**run, "cmap": "no-such-map"}))
    html = write_report(folder).read_text(encoding="utf-8")
    assert 'class="colorbar"' not in html
    assert "no-such-map" in html


def test_every_link_is_relative_and_inside_the_folder(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run", metrics=True, topk=2)
    html = write_report(folder).read_text(encoding="utf-8")
    page = _parse(folder / "index.html")
    files = [link for link in page.links if not link.startswith("#")]
    assert files, "no links"
    for link in files:
        assert "://" not in link and not link.startswith(("/", "//")), link
        assert (folder / unquote(link)).is_file(), link
    assert "http" not in html.lower().replace("http-equiv", "")
    assert "@import" not in html and "url(" not in html


def test_user_strings_are_escaped(tmp_path: Path) -> None:
    evil = ["<script>x.jpg", 'a"b.png', "it's & <b>bold</b>.jpg"]
    folder = make_run_folder(
        tmp_path / "run",
        images=evil,
        classes=((1, "<img src=x onerror=alert(1)>"), (2, 'quote"name'), (3, None)),
        failures=[("<script>alert(2)</script>.png", "cannot read <b>file</b>")],
        compare={"columns": ["method", "<i>m</i>"], "rows": [["<script>", 1.0]]},
    )
    run = json.loads((folder / "run.json").read_text())
    run["model"] = "<script>alert(3)</script>"
    (folder / "run.json").write_text(json.dumps(run))
    html = write_report(folder, title="<b>title</b>").read_text(encoding="utf-8")
    assert "<script>x.jpg" not in html and "&lt;script&gt;x.jpg" in html
    assert "<img src=x" not in html and "<script>alert" not in html
    assert "<b>" not in html and "<i>" not in html
    page = _parse(folder / "index.html")
    assert page.scripts == 1  # only the page's own
    texts = " ".join(page.text)
    for name in [*evil, "<script>alert(3)</script>", "cannot read <b>file</b>", "<b>title</b>"]:
        assert name in texts, name
    alts = {img["alt"] for img in page.images}
    assert 'a"b.png' in alts  # the attribute survives the quote intact


def test_file_names_needing_percent_encoding_still_link(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run", images=["a.jpg"])
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    odd = "images/odd #1 ?% name.png"
    (folder / "images/0000-a.png").rename(folder / odd)
    for row in rows:
        row["image_file"] = odd
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = _parse(write_report(folder))
    thumb = page.images[0]["src"]
    assert thumb == "images/odd%20%231%20%3F%25%20name.png"
    assert (folder / unquote(thumb)).is_file()


def test_missing_or_outside_files_show_a_placeholder(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run", images=["a.jpg"], methods=["gradcam"])
    row = json.loads((folder / "results.jsonl").read_text())
    (folder / "overlays/0000-a__gradcam.png").unlink()
    row["image_file"] = "../outside.png"
    (tmp_path / "outside.png").write_bytes(b"")
    (folder / "results.jsonl").write_text(json.dumps(row) + "\n")
    page = _parse(write_report(folder))
    assert page.images == []
    assert "no image" in page.text and "no overlay" in page.text


def test_truncated_and_corrupt_lines_are_skipped(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run")
    with (folder / "results.jsonl").open("ab") as file:
        file.write(b'[1, 2]\n{"image": "d.jpg", "key": "0009-d", "method": "gradc\xc3')
    with (folder / "failures.jsonl").open("a") as file:
        file.write('{"image": "e.jpg", "err')
    page = _parse(write_report(folder))
    assert len(_rows(page)) == 3
    assert "2 incomplete or unreadable lines in results.jsonl skipped" in page.text
    assert "1 incomplete or unreadable line in failures.jsonl skipped" in page.text


def test_report_can_be_rewritten_as_results_arrive(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run")
    lines = (folder / "results.jsonl").read_text().splitlines(keepends=True)
    (folder / "results.jsonl").write_text("")
    assert len(_rows(_parse(write_report(folder)))) == 0
    assert "No results yet." in _parse(folder / "index.html").text
    (folder / "results.jsonl").write_text("".join(lines[:2]))
    assert len(_rows(_parse(write_report(folder)))) == 1
    # A resumed run repeats a row it had written: it is shown once, in its first place.
    (folder / "results.jsonl").write_text("".join(lines + lines[:1]))
    assert len(_rows(_parse(write_report(folder)))) == 3
    assert not list(folder.glob(".index-*"))  # no temporary file left behind


def test_failures_are_listed(tmp_path: Path) -> None:
    folder = make_run_folder(
        tmp_path / "run", failures=[("broken.jpg", "cannot identify image file 'broken.jpg'")]
    )
    page = _parse(write_report(folder))
    assert "Failed images (1)" in page.text
    assert "broken.jpg" in page.text
    assert "cannot identify image file 'broken.jpg'" in page.text
    assert "#failures" in page.links


def test_compare_table_is_rendered(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run", compare=COMPARE)
    page = _parse(write_report(folder))
    assert "Method comparison" in page.text
    for cell in ("deletion_auc", "insertion_auc", "gradcam", "0.1235", "0.7", "layercam", "—"):
        assert cell in page.text, cell


def test_unusable_compare_file_is_noted_not_fatal(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run")
    (folder / "compare.json").write_text('{"columns": ["method"')
    page = _parse(write_report(folder))
    assert "compare.json is unreadable; comparison table left out" in page.text


def test_metrics_appear_in_cells_and_sort_menu(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run", metrics=True)
    page = _parse(write_report(folder))
    options = [
        text
        for text in page.text
        if "·" in text and text.split(" · ")[-1] in {"gradcam", "layercam"}
    ]
    assert options == [
        "Score · gradcam",
        "deletion AUC · gradcam",
        "insertion AUC · gradcam",
        "Score · layercam",
        "deletion AUC · layercam",
        "insertion AUC · layercam",
    ]
    assert "deletion AUC" in page.text and "0.86" in page.text  # insertion AUC of image 2
    first = _rows(page)[0]
    assert first["data-k5"] == "0.1" and first["data-k6"] == "0.9"


def test_top_k_targets_share_their_image_row(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run", topk=3, methods=["gradcam"])
    page = _parse(write_report(folder))
    rows = _rows(page)
    assert len(rows) == 3
    assert len(page.images) == 3 * (1 + 3)
    assert [t for t in page.text if t.startswith("#")][:3] == ["#1", "#2", "#3"]
    overlays = [img["src"] for img in page.images if "overlays/" in str(img["src"])]
    assert overlays[:3] == [
        "overlays/0000-tabby__gradcam.png",
        "overlays/0000-tabby__gradcam__t1.png",
        "overlays/0000-tabby__gradcam__t2.png",
    ]
    assert rows[0]["data-k4"] == "10.0"  # sorting by score uses the first-ranked target


def test_a_thousand_images_render_quickly_with_lazy_images(tmp_path: Path) -> None:
    images = [f"photos/img_{i:04d}.jpg" for i in range(1200)]
    folder = make_run_folder(tmp_path / "run", images=images, metrics=True, reuse_pngs=True)
    start = time.perf_counter()
    path = write_report(folder)
    seconds = time.perf_counter() - start
    assert seconds < 10, seconds
    page = _parse(path)
    assert len(_rows(page)) == 1200
    assert len(page.images) == 1200 * 3
    assert all(img["loading"] == "lazy" for img in page.images)
    assert path.stat().st_size < 3_000 * 1200  # a few kB per image row


def test_a_folder_without_run_json_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(camlens.BadInputError, match=r"has no run\.json"):
        write_report(tmp_path)
    with pytest.raises(camlens.BadInputError, match="is not a folder"):
        write_report(tmp_path / "missing")
    (tmp_path / "run.json").write_text("[1, 2]")
    with pytest.raises(camlens.BadInputError, match="expected an object"):
        write_report(tmp_path)


def test_an_automatic_layer_shows_the_layer_it_picked(tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run")
    run = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**run, "layer": "auto"}))
    page = _parse(write_report(folder))
    assert "auto → features" in page.text


def test_a_regressors_prediction_reads_as_a_value_not_unit_0():
    from camlens.report._html import _prediction_label
    from camlens.report._records import Prediction

    assert _prediction_label(Prediction(unit=0, name=None, value=57.25)) == "value 57.25"
    assert _prediction_label(Prediction(unit=3, name=None, value=2.0, probability=0.4)) == "unit 3"
