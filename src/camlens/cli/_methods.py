"""`camlens methods`: the CAM methods with a one-line description."""

from __future__ import annotations

import click

from camlens.methods import REGISTRY


@click.command("methods")
def methods_command() -> None:
    """List the CAM methods with a one-line description."""
    seen: set[type] = set()
    for key, cls in REGISTRY.items():
        if cls in seen:
            continue
        seen.add(cls)
        aliases = [k for k, c in REGISTRY.items() if c is cls and k != key]
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        alias_text = f" (also: {', '.join(aliases)})" if aliases else ""
        click.echo(f"{key:<22}{summary}{alias_text}")
