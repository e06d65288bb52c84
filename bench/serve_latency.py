"""Time from click to overlay in the explorer: Grad-CAM on the bundled MobileNetV2.

Measured through the session layer (what the page's Explain button runs: read the sample,
resize, preprocess, explain, draw the overlay), first call and later calls.

    python bench/serve_latency.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

from camlens import zoo
from camlens.ui import Session


def main() -> None:
    """Print the first call's time and the median and max of the later ones."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    photo = zoo.photos()[0]
    session = Session(zoo.mobilenet_v2(), classes=zoo.imagenet_classes())
    times = []
    for _ in range(args.repeats + 1):
        start = time.perf_counter()
        (result,) = session.explain(photo.image, ["gradcam"])
        session.prediction(result.explanation)
        times.append(time.perf_counter() - start)
    later = times[1:]
    print(f"first call: {times[0] * 1000:.0f} ms")
    print(
        f"later calls ({len(later)}): median {statistics.median(later) * 1000:.0f} ms, "
        f"max {max(later) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
