"""Open an HTML report in a real browser (the system's Chromium, driven by Playwright).

Playwright never downloads a browser here: it launches the Chromium that the system package
manager installed (Debian: ``apt-get install chromium``), found by `chromium_executable`.

    result = open_report(folder / "index.html", tmp_path / "report.png")
    assert result.ok, result.problems()

`report_page` gives the live page for tests that drive it (type in a box, click a button).
A test calls `require_browser()` first: it skips when Chromium or Playwright is missing, and
fails instead where ``CAMLENS_REQUIRE_BROWSER`` is set (CI, where both must be present).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

#: Where a test run keeps pictures people may want to look at (git-ignored).
ARTIFACTS = Path(
    os.environ.get("CAMLENS_TEST_ARTIFACTS", Path(__file__).parents[1] / "camlens-test-artifacts")
)

#: Debian's real binary first: /usr/bin/chromium is a shell wrapper around it.
_CHROMIUM_PATHS = ("/usr/lib/chromium/chromium",)
_CHROMIUM_NAMES = ("chromium", "chromium-browser")

# Resolves once every <img> has loaded or failed (lazy ones are switched to eager first) and
# returns the sources of those that are broken (no pixels).
_BROKEN_IMAGES_JS = """
async () => {
  const images = Array.from(document.images);
  images.forEach((img) => { img.loading = "eager"; });
  await Promise.all(images.map((img) => img.complete ? null : new Promise((done) => {
    img.addEventListener("load", done, { once: true });
    img.addEventListener("error", done, { once: true });
  })));
  return images.filter((img) => img.naturalWidth === 0).map((img) => img.getAttribute("src"));
}
"""


@dataclass
class BrowserResult:
    """What went wrong, if anything, while a page loaded and its images were fetched.

    Attributes:
        url: The ``file://`` URL that was opened.
        console_errors: Console messages of type error.
        page_errors: Uncaught JavaScript exceptions.
        failed_requests: ``url (reason)`` of each request that failed (a missing file...).
        broken_images: ``src`` of each image with no pixels once loading finished.
        outside_requests: URLs requested outside the page's folder: any non-``file:`` URL
            (network, CDN) and ``file:`` URLs elsewhere on disk. They are aborted, never sent.
        dialogs: Messages of ``alert``/``confirm``/``prompt`` dialogs (dismissed).
        screenshot: The screenshot file, if one was taken.
    """

    url: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    def problems(self) -> list[str]:
        """Return one line per problem found, empty if there was none."""
        groups = {
            "console error": self.console_errors,
            "page error": self.page_errors,
            "failed request": self.failed_requests,
            "broken image": self.broken_images,
            "request outside the folder": self.outside_requests,
            "dialog": self.dialogs,
        }
        return [f"{kind}: {item}" for kind, items in groups.items() for item in items]

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems()


def chromium_executable() -> str | None:
    """Return the path of the system's Chromium, or None.

    ``CAMLENS_CHROMIUM`` names it explicitly; otherwise Debian's binary, then ``chromium`` or
    ``chromium-browser`` on ``PATH``.
    """
    explicit = os.environ.get("CAMLENS_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for path in _CHROMIUM_PATHS:
        if os.access(path, os.X_OK):
            return path
    for name in _CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_reason() -> str | None:
    """Say what is missing for browser tests, or return None if Chromium and Playwright exist."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install playwright; make setup)"
    if chromium_executable() is None:
        return "no Chromium found (apt-get install chromium, or set CAMLENS_CHROMIUM)"
    return None


def require_browser() -> None:
    """Skip the calling test when no browser can run; fail instead under CAMLENS_REQUIRE_BROWSER."""
    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("CAMLENS_REQUIRE_BROWSER"):
        pytest.fail(f"CAMLENS_REQUIRE_BROWSER is set but {reason}")
    pytest.skip(reason)


@contextmanager
def report_page(
    html_path: str | os.PathLike[str], *, width: int = 1280, height: int = 900
) -> Iterator[tuple[Page, BrowserResult]]:
    """Open ``html_path`` in headless Chromium; yield the page and the problems seen so far.

    Problems keep being recorded while the caller drives the page. Nothing leaves the machine:
    requests outside the page's folder are recorded and aborted.
    """
    from playwright.sync_api import sync_playwright

    executable = chromium_executable()
    if executable is None:
        raise RuntimeError(missing_reason())
    html = Path(html_path).resolve()
    folder = unquote(html.parent.as_uri()) + "/"
    result = BrowserResult(url=html.as_uri())

    def on_request(request: object) -> None:
        url = str(getattr(request, "url", ""))
        if not unquote(url).startswith(folder):
            result.outside_requests.append(url)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            context.route(
                lambda url: not unquote(url).startswith(folder), lambda route: route.abort()
            )
            page = context.new_page()
            page.on(
                "console",
                lambda msg: result.console_errors.append(msg.text) if msg.type == "error" else None,
            )
            page.on("pageerror", lambda error: result.page_errors.append(str(error)))
            page.on(
                "requestfailed",
                lambda req: result.failed_requests.append(f"{req.url} ({req.failure})"),
            )
            page.on("request", on_request)
            page.on(
                "dialog", lambda dialog: (result.dialogs.append(dialog.message), dialog.dismiss())
            )
            page.goto(result.url, wait_until="load")
            yield page, result
        finally:
            browser.close()


def find_broken_images(page: Page, result: BrowserResult) -> None:
    """Load every image of the page (lazy ones too) and record those without pixels."""
    result.broken_images.extend(page.evaluate(_BROKEN_IMAGES_JS))


def open_report(
    html_path: str | os.PathLike[str],
    screenshot_path: str | os.PathLike[str] | None = None,
    *,
    full_page: bool = True,
) -> BrowserResult:
    """Open a report, load all its images, optionally screenshot it, and return its problems.

    Args:
        html_path: The page to open (e.g. a report's ``index.html``).
        screenshot_path: Where to write a PNG screenshot, or None for none.
        full_page: Capture the whole page rather than the first screen.

    Returns:
        The problems seen: console and page errors, failed requests, broken images, requests
        outside the page's folder, dialogs.
    """
    with report_page(html_path) as (page, result):
        find_broken_images(page, result)
        page.wait_for_load_state("networkidle")
        if screenshot_path is not None:
            path = Path(screenshot_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path), full_page=full_page)
            result.screenshot = path
    return result


def keep_artifact(path: str | os.PathLike[str], name: str) -> Path:
    """Copy a file a test wrote to ``camlens-test-artifacts/<name>``, a stable place to look."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    kept = ARTIFACTS / name
    shutil.copyfile(path, kept)
    return kept
