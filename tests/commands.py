"""How the tests run the installed ``camlens`` command."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def camlens_command() -> list[str]:
    """Return the argv prefix that runs ``camlens``: the console script beside this Python,
    else ``python -m camlens.cli``."""
    exe = shutil.which("camlens", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "camlens.cli"]
