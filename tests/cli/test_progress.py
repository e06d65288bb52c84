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


def test_the_rate_is_over_the_whole_run_not_the_last_burst() -> None:
    # One batch of 5 computed for 8 s, its files written in a burst (one image every 0.02 s):
    # 5 images in 8.08 s is 0.6 images/s, not the 50/s between the burst's samples.
    text = _text([(8.0 + 0.02 * i, 1) for i in range(5)], total=10)
    assert "5/10" in text and "0.6 images/s" in text
    # 5 images left at 5 / 8.08 images/s: 8.08 s, shown rounded up.
    assert "ETA 0:00:09" in text


def test_before_the_first_image_there_is_no_rate_and_no_eta() -> None:
    text = _text([(3.0, 0)], total=10)
    assert "images/s" not in text and "ETA -:--:--" in text
