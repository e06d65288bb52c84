"""The explorer in the system's Chromium: the overlays it shows are the library's own."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import camlens
from browser import chromium_executable, keep_artifact, require_browser
from camlens import zoo
from camlens.ui import Session

gr = pytest.importorskip("gradio")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Session]]:
    from camlens.ui._app import build_app

    photo = zoo.photos()[0]
    session = Session(
        zoo.mobilenet_v2(), classes=zoo.imagenet_classes(), images={photo.name: photo.image}
    )
    app = build_app(session)
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    try:
        yield f"http://127.0.0.1:{port}/", session
    finally:
        app.close()


def _library_overlay(session: Session, image: np.ndarray, method: str, layer: str | None) -> Any:
    picture = session.picture(image)
    exp = camlens.explain(session.model, session.preprocess([picture]), layer=layer, method=method)
    return np.asarray(camlens.overlay(picture, exp.maps[0]))


def _shown_overlay(page: Any) -> np.ndarray:
    image = page.locator("#overlays img").first
    image.wait_for(state="visible", timeout=60_000)
    data = page.request.get(image.get_attribute("src")).body()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _explain_and_read(page: Any, before: np.ndarray | None) -> np.ndarray:
    page.locator("#explain").click()
    for _ in range(120):
        page.wait_for_timeout(500)
        try:
            shown = _shown_overlay(page)
        except Exception:
            continue
        if before is None or shown.shape != before.shape or not np.array_equal(shown, before):
            return shown
    raise AssertionError("the overlay did not change")


def test_explorer_shows_the_librarys_overlays(served: tuple[str, Session], tmp_path: Path) -> None:
    require_browser()
    from playwright.sync_api import sync_playwright

    url, session = served
    photo = zoo.photos()[0].image
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable())
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.locator("#upload input[type=file]").set_input_files(
                str(_write_png(tmp_path / "cat.png", photo))
            )
            page.wait_for_timeout(1000)
            first = _explain_and_read(page, None)
            assert (
                np.abs(first.astype(int) - _library_overlay(session, photo, "gradcam", None)).max()
                <= 1
            )

            page.get_by_label("gradcam++", exact=True).check()
            page.get_by_label("gradcam", exact=True).uncheck()
            page.locator("#layer input").click()
            page.locator("#layer input").fill("features.17")
            page.wait_for_timeout(500)
            page.keyboard.press("ArrowDown")
            page.keyboard.press("Enter")
            page.wait_for_timeout(500)
            second = _explain_and_read(page, first)
            chosen = page.locator("#layer input").input_value().split(" [")[0]
            assert chosen.startswith("features.17")
            expected = _library_overlay(session, photo, "gradcam++", chosen)
            assert np.abs(second.astype(int) - expected).max() <= 1
            page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
            keep_artifact(tmp_path / "serve.png", "serve.png")

            bad = tmp_path / "notes.png"
            bad.write_text("not a picture")
            page.goto(url)  # a fresh page: the upload box holds the photo
            page.locator("#upload input[type=file]").set_input_files(str(bad))
            page.wait_for_timeout(1000)
            page.locator("#explain").click()
            page.locator("#message").get_by_text("not an image").wait_for(timeout=60_000)
            assert page.request.get(url).ok
        finally:
            browser.close()


def _write_png(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image).save(path)
    return path


def test_stop_cancels_a_running_scorecam_and_gradcam_runs_after(
    served: tuple[str, Session],
) -> None:
    require_browser()
    from playwright.sync_api import sync_playwright

    url, session = served
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable())
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.get_by_label("scorecam", exact=True).check()
            page.get_by_label("gradcam", exact=True).uncheck()
            page.locator("#explain").click()
            # Score-CAM of MobileNetV2's 1280 channels takes many batches: stop once it reports.
            page.get_by_text("scoring masks").first.wait_for(timeout=60_000)
            page.locator("#stop").click()
            page.locator("#message").get_by_text("Cancelled").wait_for(timeout=60_000)
            assert "perturbed inputs" in page.locator("#message").inner_text()

            page.get_by_label("gradcam", exact=True).check()
            page.get_by_label("scorecam", exact=True).uncheck()
            page.locator("#explain").click()
            shown = _shown_overlay(page)  # the sample: the first bundled photo
            expected = _library_overlay(session, zoo.photos()[0].image, "gradcam", None)
            assert np.abs(shown.astype(int) - expected).max() <= 1
            assert "Cancelled" not in page.locator("#message").inner_text()
        finally:
            browser.close()
