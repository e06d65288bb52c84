"""Time from click to overlay in the explorer: Grad-CAM on the bundled MobileNetV2.

Three layers of the same click, first call and later calls:

- ``session``: what the page's Explain button runs in Python (read the sample, resize,
  preprocess, explain, draw the overlay, the top-5 text), through ``camlens.ui.Session``;
- ``http``: the app's ``/explain`` endpoint through ``gradio_client`` (gradio's queue, its
  event stream, PNG encoding of the gallery and the raw map, the downloads written);
- ``browser``: the system's Chromium (Playwright, never a downloaded browser) clicks Explain
  and waits until the gallery shows a new overlay picture, loaded.

    python bench/serve_latency.py [--repeats 20] [--only session http browser]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import time
from collections.abc import Callable

from camlens import zoo
from camlens.ui import Session

#: Clicks Explain and records, in the page's clock, when the gallery's status tracker has
#: been busy and is hidden again with the overlay loaded (the same overlay twice keeps the
#: same URL, so a changed picture cannot be the signal).
_CLICK_JS = """
() => {
  const tracker = document.querySelector("#overlays [data-testid=status-tracker]");
  const done = { start: performance.now(), end: null, busy: false };
  window.__camlensClick = done;
  const seen = new MutationObserver((records) => {
    for (const r of records) {
      if (!(r.oldValue || "").includes("hide") || !tracker.classList.contains("hide")) {
        done.busy = true;
      }
    }
    const img = document.querySelector("#overlays img");
    if (done.busy && tracker.classList.contains("hide") && img !== null) {
      img.loading = "eager";
      const finish = () => { done.end = performance.now(); };
      img.complete && img.naturalWidth > 0 ? finish() : img.addEventListener("load", finish);
      seen.disconnect();
    }
  });
  seen.observe(tracker, { attributes: true, attributeFilter: ["class"], attributeOldValue: true });
  document.querySelector("#explain").click();
}
"""


def _session() -> Session:
    photo = zoo.photos()[0]
    return Session(
        zoo.mobilenet_v2(), classes=zoo.imagenet_classes(), images={photo.name: photo.image}
    )


def _times(call: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _print(name: str, times: list[float]) -> None:
    later = times[1:]
    print(
        f"{name}: first {times[0] * 1000:.0f} ms; later ({len(later)}): median "
        f"{statistics.median(later) * 1000:.0f} ms, max {max(later) * 1000:.0f} ms"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chromium() -> str:
    for path in ("/usr/lib/chromium/chromium", shutil.which("chromium") or ""):
        if path and os.access(path, os.X_OK):
            return path
    raise SystemExit("the browser figure needs the system's Chromium (apt-get install chromium)")


def _browser(url: str, repeats: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium())
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.locator("#explain").wait_for()
            page.locator("#overlays [data-testid=status-tracker]").wait_for(state="attached")
            times = []
            for _ in range(repeats + 1):
                page.evaluate(_CLICK_JS)
                page.wait_for_function("() => window.__camlensClick.end !== null", timeout=120_000)
                click = page.evaluate("() => window.__camlensClick")
                times.append((click["end"] - click["start"]) / 1000)
            return times
        finally:
            browser.close()


def _http(url: str, session: Session, repeats: int) -> list[float]:
    from gradio_client import Client

    from camlens.ui._session import AUTO

    client = Client(url, verbose=False)
    # The page's defaults: the first sample, the automatic layer, the first target choice.
    target = session.target_choices()[0]
    inputs = (None, next(iter(session.images)), ["gradcam"], AUTO, target, "minmax", "jet", 0.5)
    return _times(lambda: client.predict(*inputs, api_name="/explain"), repeats)


def main() -> None:
    """Print the first call's time and the median and max of the later ones, per layer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--only", nargs="+", default=["session", "http", "browser"])
    args = parser.parse_args()
    if "session" in args.only:
        session = _session()
        photo = next(iter(session.images.values()))

        def click() -> None:
            (result,) = session.explain(photo, ["gradcam"])
            session.prediction(result.explanation)

        _print("session", _times(click, args.repeats))
    if not {"http", "browser"} & set(args.only):
        return
    from camlens.ui._app import build_app

    # A fresh session per served app, so each first call builds its explainer.
    for layer in [name for name in ("http", "browser") if name in args.only]:
        session = _session()
        app = build_app(session)
        port = _free_port()
        app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        url = f"http://127.0.0.1:{port}/"
        try:
            if layer == "http":
                _print("http", _http(url, session, args.repeats))
            else:
                _print("browser", _browser(url, args.repeats))
        finally:
            app.close()


if __name__ == "__main__":
    main()
