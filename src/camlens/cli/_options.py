"""Option parsing shared by the subcommands."""

from __future__ import annotations

import re

import click


def parse_size(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, int] | None:
    """Parse an image size option: ``"224"`` (square), ``"240x320"``, ``"240,320"`` or
    ``"240 320"`` into ``(H, W)``; ``None`` stays ``None``."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)(?:\s*[xX,\s]\s*(\d+))?\s*", value)
    if match and int(match[1]) > 0 and int(match[2] or match[1]) > 0:
        return int(match[1]), int(match[2] or match[1])
    raise click.BadParameter(
        f"{value!r} is not a size: give N (square) or HxW, e.g. 224 or 240x320", ctx, param
    )
