"""Images per second of `camlens explain`: the local command, and Ray with 1 and 2 workers.

Run: ``python bench/ray_throughput.py [N_IMAGES]`` (bundled MobileNetV2, Grad-CAM, the bundled
photos copied N times). The figure is the whole command's wall time, Ray's start included.

On a GPU machine or a cluster (see docs/distributed.md)::

    python bench/ray_throughput.py 2000 --device cuda --workers 1 2 4 --gpus-per-worker 0.25
    python bench/ray_throughput.py 20000 --device cuda --workers 8 --gpus-per-worker 1 \\
        --address auto --tmp /shared/bench
"""

from __future__ import annotations

import argparse
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
         "--out", str(out), *extra],
        check=True, capture_output=True, timeout=3600,
    )  # fmt: skip
    return count / (time.perf_counter() - start)


def main() -> None:
    """Print one line per engine."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="?", type=int, default=48, help="number of images")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", default="8")
    parser.add_argument("--gpus-per-worker", default=None)
    parser.add_argument("--address", default=None, help="a running Ray cluster (default: local)")
    parser.add_argument("--tmp", default=None, help="a folder every node mounts (clusters)")
    args = parser.parse_args()
    common = ["--device", args.device, "--batch-size", args.batch_size]
    ray = ["--engine", "ray"]
    if args.gpus_per_worker is not None:
        ray += ["--gpus-per-worker", args.gpus_per_worker]
    if args.address is not None:
        ray += ["--address", args.address]
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        images = Path(tmp) / "in"
        images.mkdir()
        photos = sorted(PHOTOS.glob("*.jpg"))
        for i in range(args.images):
            shutil.copy(photos[i % len(photos)], images / f"p{i:05d}.jpg")
        print(f"local: {_run(images, Path(tmp) / 'local', *common):.2f} images/s")
        for workers in args.workers:
            out = Path(tmp) / f"ray{workers}"
            rate = _run(images, out, *common, *ray, "--workers", str(workers))
            print(f"ray, {workers} worker(s): {rate:.2f} images/s")


if __name__ == "__main__":
    main()
