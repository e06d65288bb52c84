"""Images per second of `camlens explain`: the local command, and Ray with 1 and 2 workers.

Run: ``python bench/ray_throughput.py [N_IMAGES]`` (bundled MobileNetV2, Grad-CAM, the bundled
photos copied N times). The figure is the whole command's wall time, Ray's start included.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHOTOS = Path(__file__).parents[1] / "src" / "camlens" / "zoo" / "data"


def _run(images: Path, out: Path, *extra: str) -> float:
    """Return the images per second of one run of the command."""
    count = len(list(images.iterdir()))
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "camlens.cli", "explain", "mobilenet_v2", str(images),
         "--out", str(out), "--batch-size", "8", *extra],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return count / (time.perf_counter() - start)


def main() -> None:
    """Print one line per engine."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 48
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "in"
        images.mkdir()
        photos = sorted(PHOTOS.glob("*.jpg"))
        for i in range(n):
            shutil.copy(photos[i % len(photos)], images / f"p{i:04d}.jpg")
        print(f"local: {_run(images, Path(tmp) / 'local'):.2f} images/s")
        for workers in (1, 2):
            out = Path(tmp) / f"ray{workers}"
            rate = _run(images, out, "--engine", "ray", "--workers", str(workers))
            print(f"ray, {workers} worker(s): {rate:.2f} images/s")


if __name__ == "__main__":
    main()
