"""The HTML report in a real browser: loads cleanly offline, after a move; filter and sort work."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from browser import keep_artifact, open_report, report_page, require_browser
from camlens.report import write_report
from run_folder import make_run_folder

IMAGES = (
    "cats/tabby.jpg",
    "dogs/beagle.png",
    "coffee.jpg",
    "<script>alert(1)</script>.jpg",
    'quote"d name.png',
    "zebra.jpg",
)
CLASSES = ((281, "tabby, tabby cat"), (162, "beagle"), (967, "espresso"), (340, "zebra"))
FAILURES = [("broken.jpg", "cannot identify image file 'broken.jpg'")]
COMPARE = {
    "columns": ["method", "deletion_auc", "insertion_auc"],
    "rows": [["gradcam", 0.1234, 0.7012], ["layercam", 0.1501, 0.6803]],
}


@pytest.fixture
def report(tmp_path: Path) -> Path:
    """A report written in one folder, then the folder moved elsewhere: return its index.html."""
    require_browser()
    written = make_run_folder(
        tmp_path / "written",
        IMAGES,
        classes=CLASSES,
        metrics=True,
        failures=FAILURES,
        compare=COMPARE,
        size=(48, 64),
    )
    with (written / "results.jsonl").open("a") as file:
        file.write('{"image": "interrupted.jpg", "key": "00')  # a run cut off mid-line
    write_report(written, title="camlens report: synthetic run")
    moved = tmp_path / "elsewhere" / "moved-report"
    moved.parent.mkdir()
    shutil.move(written, moved)
    return moved / "index.html"


def _visible_images(page: object) -> list[str]:
    return page.eval_on_selector_all(  # type: ignore[attr-defined]
        "#grid tbody tr:not([hidden])", "rows => rows.map(r => r.dataset.k1)"
    )


def test_report_opens_cleanly_offline_after_a_move(report: Path, tmp_path: Path) -> None:
    result = open_report(report, tmp_path / "report.png")
    assert result.ok, "\n".join(result.problems())
    assert result.screenshot is not None and result.screenshot.stat().st_size > 10_000
    keep_artifact(result.screenshot, "report.png")


def test_escaped_names_show_as_text_and_run_nothing(report: Path) -> None:
    with report_page(report) as (page, result):
        assert page.locator("#grid tbody tr").count() == len(IMAGES)
        names = page.eval_on_selector_all(".image-cell .file", "spans => spans.map(s => s.title)")
        assert names == list(IMAGES)
        assert page.locator("script").count() == 1
        assert page.title() == "camlens report: synthetic run"
    assert result.ok, "\n".join(result.problems())


def test_filter_hides_rows_that_do_not_match(report: Path) -> None:
    with report_page(report) as (page, result):
        count = page.locator("#count")
        assert count.inner_text() == "6 of 6 images"
        page.fill("#filter", "tabby")
        assert _visible_images(page) == ["cats/tabby.jpg", 'quote"d name.png']  # predicted tabby
        assert count.inner_text() == "2 of 6 images"
        page.fill("#filter", "ZEBRA")  # class name or file name, any case
        assert _visible_images(page) == ["<script>alert(1)</script>.jpg", "zebra.jpg"]
        page.fill("#filter", "no such thing")
        assert _visible_images(page) == []
        assert page.locator("#empty").is_visible()
        page.fill("#filter", "")
        assert len(_visible_images(page)) == len(IMAGES)
        assert not page.locator("#empty").is_visible()
    assert result.ok, "\n".join(result.problems())


def test_sort_orders_rows_by_name_score_and_metric(report: Path) -> None:
    with report_page(report) as (page, result):
        page.select_option("#sort", label="Image name")
        by_name = sorted(IMAGES, key=str.lower)
        assert _visible_images(page) == [name.lower() for name in by_name]
        page.click("#sort-dir")
        assert page.locator("#sort-dir").inner_text() == "↓ descending"
        assert _visible_images(page) == [name.lower() for name in reversed(by_name)]
        # Scores grow with the image's position in the run; numeric sorts start high.
        page.select_option("#sort", label="Score · layercam")
        assert _visible_images(page) == [name.lower() for name in reversed(IMAGES)]
        page.click("#sort-dir")
        assert _visible_images(page) == [name.lower() for name in IMAGES]
        # deletion AUC (gradcam) is 0.1 + 0.01 * (7 i mod 10): 0.1, 0.17, 0.14, 0.11, 0.18, 0.15
        page.select_option("#sort", label="deletion AUC · gradcam")
        order = [IMAGES[i].lower() for i in (4, 1, 5, 2, 3, 0)]
        assert _visible_images(page) == order
        # Sorting and filtering combine.
        page.fill("#filter", "jpg")
        assert _visible_images(page) == [n for n in order if n.endswith("jpg")]
    assert result.ok, "\n".join(result.problems())


def test_failures_and_comparison_are_shown(report: Path) -> None:
    with report_page(report) as (page, result):
        failures = page.locator("#failures")
        assert failures.is_visible()
        assert "cannot identify image file 'broken.jpg'" in failures.inner_text()
        compare = page.locator("#compare table")
        assert compare.locator("tbody tr").count() == 2
        assert "0.1234" in compare.inner_text()
        note = page.locator(".note").inner_text()
        assert "1 incomplete or unreadable line in results.jsonl skipped" in note
    assert result.ok, "\n".join(result.problems())


def test_a_thousand_rows_load_and_filter(tmp_path: Path) -> None:
    require_browser()
    images = [f"photos/img_{i:04d}.jpg" for i in range(1200)]
    folder = make_run_folder(tmp_path / "big", images, metrics=True, reuse_pngs=True)
    with report_page(write_report(folder)) as (page, result):
        loaded = page.evaluate(
            "Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length"
        )
        assert loaded < 1200 * 3 // 2  # lazy: images below the fold wait
        page.fill("#filter", "img_0042")
        assert _visible_images(page) == ["photos/img_0042.jpg"]
        page.fill("#filter", "")
        page.select_option("#sort", label="Score · gradcam")
        assert _visible_images(page)[0] == "photos/img_1199.jpg"
    assert result.ok, "\n".join(result.problems()[:20])


def test_the_browser_check_reports_what_goes_wrong(tmp_path: Path) -> None:
    require_browser()
    (tmp_path / "page").mkdir()
    (tmp_path / "outside.png").write_bytes(b"")
    page = tmp_path / "page" / "index.html"
    page.write_text(
        '<!DOCTYPE html><title>bad</title><img src="missing.png">'
        '<img src="http://example.invalid/remote.png"><img src="../outside.png">'
        "<script>console.error('boom'); alert('hi'); undefinedFunction();</script>"
    )
    result = open_report(page)
    assert not result.ok
    assert "boom" in result.console_errors  # beside "Failed to load resource" ones
    assert any("undefinedFunction" in error for error in result.page_errors)
    assert result.dialogs == ["hi"]
    assert sorted(result.broken_images) == sorted(
        ["missing.png", "http://example.invalid/remote.png", "../outside.png"]
    )
    assert sorted(result.outside_requests) == sorted(
        ["http://example.invalid/remote.png", (tmp_path / "outside.png").as_uri()]
    )
    assert any("missing.png" in failure for failure in result.failed_requests)
