"""The run's progress bar (both engines): its text on a fake clock, never timed."""

from __future__ import annotations

import io

from rich.console import Console

from camlens.cli._common import progress_display


def _text(times: list[tuple[float, int]], total: int) -> str:
    """Render the bar after advancing ``n`` images at each fake time ``t``."""
    now = [0.0]
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=False, color_system=None)
    display = progress_display(console, get_time=lambda: now[0])
    task = display.add_task("explaining", total=total)  # started at t = 0
    for t, n in times:
        now[0] = t
        display.advance(task, n)
    return "".join(segment.text for segment in console.render(display.get_renderable()))


def test_the_bar_shows_images_per_second_and_eta() -> None:
    # 4 images at t = 2 s, 4 more at t = 4 s: 4 images over the 2 s between the samples is
    # 2.0 images/s; 12 left at that rate is 6 s.
    text = _text([(2.0, 4), (4.0, 4)], total=20)
    assert "8/20" in text
    assert "2.0 images/s" in text
    assert "ETA 0:00:06" in text
    assert "0:00:04" in text  # elapsed


def test_the_rate_follows_the_recent_samples() -> None:
    # 10 images over the 5 s between t = 1 and t = 6 (2 at t = 1 are the first sample): 2.0/s,
    # and 8 images left take 4 s.
    text = _text([(1.0, 2), (3.0, 4), (6.0, 6)], total=20)
    assert "12/20" in text and "2.0 images/s" in text and "ETA 0:00:04" in text
