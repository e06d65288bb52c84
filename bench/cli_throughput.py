"""`camlens explain` on a folder against the library API in a loop: images per second.

The command does everything a user gets (read and decode each file, resize, preprocess, explain,
colour and blend the overlay, encode two PNGs and a JPEG, save the arrays, append the tables);
the API loop only calls the explainer on batches already in memory. Same model, method and
batch size, one process each, run alternately.

    python bench/cli_throughput.py                # 200 images of 448x448, batch 16, 3 rounds
    python bench/cli_throughput.py --images 40 --rounds 1   # smoke run
    python bench/cli_throughput.py --threads 1    # one intra-op thread (robust on a busy machine)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _harness import host, summarise

RESULTS = Path(__file__).parent / "results" / "cli_throughput.json"


def make_folder(root: Path, count: int, side: int) -> list[Path]:
    """Write ``count`` JPEGs (the bundled photos, resized to ``side``), return their paths."""
    from camlens import zoo

    photos = [Image.fromarray(p.image).resize((side, side)) for p in zoo.photos()]
    paths = []
    for i in range(count):
        path = root / f"img{i:04d}.jpg"
        photos[i % len(photos)].save(path, quality=90)
        paths.append(path)
    return paths


def api_rate(paths: list[Path], batch: int, method: str) -> float:
    """Return images/s of the explainer called on in-memory batches (after one warm-up call)."""
    import torch

    import camlens
    from camlens import zoo
    from camlens.io import Preprocess, read_image

    model = zoo.mobilenet_v2()
    x = torch.from_numpy(Preprocess("imagenet")([read_image(p) for p in paths]))
    explainer = camlens.Explainer(model, method=method)
    explainer(x[:batch])
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        explainer(x[i : i + batch])
    return len(x) / (time.perf_counter() - start)


def cli_rate(
    folder: Path, out: Path, batch: int, method: str, env: dict[str, str]
) -> tuple[float, float]:
    """Return (images/s the command reports for its loop, images/s over its whole wall time)."""
    camlens_exe = shutil.which("camlens", path=str(Path(sys.executable).parent)) or "camlens"
    start = time.perf_counter()
    proc = subprocess.run(
        [camlens_exe, "explain", "mobilenet_v2", str(folder), "--out", str(out), "-m", method,
         "--batch-size", str(batch), "--overwrite"],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    wall = time.perf_counter() - start
    match = re.search(r"(\d+) image\(s\) explained in ([\d.]+) s", proc.stdout)
    if match is None:
        raise RuntimeError(f"unexpected output: {proc.stdout}")
    count = int(match[1])
    return count / float(match[2]), count / wall


def main() -> None:
    """Run the comparison and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--side", type=int, default=448)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--method", default="gradcam")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both (default: torch's)")
    parser.add_argument("--api-worker", nargs=3, metavar=("FOLDER", "BATCH", "METHOD"))
    args = parser.parse_args()
    if args.api_worker:  # a fresh process for the API loop, like the command's
        folder, batch, method = args.api_worker
        print(json.dumps(api_rate(sorted(Path(folder).glob("*.jpg")), int(batch), method)))
        return

    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        make_folder(root / "in", args.images, args.side)
        api, loop, whole = [], [], []
        for _ in range(args.rounds):
            out = subprocess.run(
                [sys.executable, __file__, "--api-worker", str(root / "in"), str(args.batch),
                 args.method],
                capture_output=True, text=True, check=True, env=env,
            )  # fmt: skip
            api.append(float(out.stdout.strip().splitlines()[-1]))
            loop_rate, wall_rate = cli_rate(root / "in", root / "out", args.batch, args.method, env)
            loop.append(loop_rate)
            whole.append(wall_rate)
    api_s, loop_s, whole_s = (summarise([1 / r for r in rates]) for rates in (api, loop, whole))
    ratio = float(np.median(loop) / np.median(api))
    report = {
        "images": args.images,
        "side": args.side,
        "batch": args.batch,
        "method": args.method,
        "threads": args.threads,
        "api_images_per_s": api,
        "cli_loop_images_per_s": loop,
        "cli_wall_images_per_s": whole,
        "ratio_cli_loop_over_api": ratio,
        "ratio_cli_wall_over_api": float(np.median(whole) / np.median(api)),
        "seconds_per_image": {"api": api_s, "cli_loop": loop_s, "cli_wall": whole_s},
        "host": host(),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    threads = f"{args.threads} thread(s)" if args.threads else "default threads"
    print(f"{args.images} images {args.side}x{args.side}, batch {args.batch}, {args.method}, "
          f"{threads}, {args.rounds} rounds (medians)\n")  # fmt: skip
    print("| run | images/s | x API |")
    print("|---|---:|---:|")
    print(f"| library API loop (in-memory batches) | {np.median(api):.1f} | 1.00 |")
    print(f"| `camlens explain`, its loop | {np.median(loop):.1f} | {ratio:.2f} |")
    print(
        f"| `camlens explain`, whole command (start-up, model load, report) | "
        f"{np.median(whole):.1f} | {report['ratio_cli_wall_over_api']:.2f} |"
    )


if __name__ == "__main__":
    main()
