"""How the tests run the installed ``camlens`` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def camlens_command() -> list[str]:
    """Return the argv prefix that runs ``camlens``: the console script beside this Python,
    else ``python -m camlens.cli``."""
    exe = shutil.which("camlens", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "camlens.cli"]


def run_camlens(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``camlens ARGS...`` (200 columns wide, 10 minutes at most), capturing its output."""
    return subprocess.run(
        [*camlens_command(), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
    )
