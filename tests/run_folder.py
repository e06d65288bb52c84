"""Write a synthetic `camlens explain` output folder (small PNGs, JSON files) for report tests."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import camlens

METRICS = ("deletion_auc", "insertion_auc")


def photo(seed: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """Return a smooth random uint8 RGB picture of ``size`` (H, W): a stand-in for a photo."""
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 256, (2, 2, 3)).astype(np.float64)
    ys = np.linspace(0.0, 1.0, size[0])[:, None, None]
    xs = np.linspace(0.0, 1.0, size[1])[None, :, None]
    top = corners[0, 0] * (1 - xs) + corners[0, 1] * xs
    bottom = corners[1, 0] * (1 - xs) + corners[1, 1] * xs
    return (top * (1 - ys) + bottom * ys).astype(np.uint8)


def blob(seed: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """Return a float map in [0, 1] of ``size``: one Gaussian bump at a seeded place."""
    rng = np.random.default_rng(seed)
    cy, cx = rng.uniform(0.2, 0.8, 2)
    ys = np.linspace(0.0, 1.0, size[0])[:, None]
    xs = np.linspace(0.0, 1.0, size[1])[None, :]
    return np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / 0.05)


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode a uint8 array (or a [0, 1] float map, as grayscale) as PNG."""
    if pixels.dtype != np.uint8:
        pixels = np.round(pixels * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_run_folder(
    folder: Path,
    images: Sequence[str] = ("cats/tabby.jpg", "dogs/beagle.png", "coffee.jpg"),
    *,
    methods: Sequence[str] = ("gradcam", "layercam"),
    classes: Sequence[tuple[int, str | None]] = (
        (281, "tabby, tabby cat"),
        (162, "beagle"),
        (967, "espresso"),
    ),
    topk: int = 1,
    metrics: bool = False,
    failures: Sequence[tuple[str, str]] = (),
    compare: dict[str, Any] | None = None,
    size: tuple[int, int] = (24, 32),
    reuse_pngs: bool = False,
    arrays: bool = False,
) -> Path:
    """Write ``run.json``, ``results.jsonl``, images and maps as `camlens explain` would.

    Image ``i`` is predicted as ``classes[i % len(classes)]`` with probability ``0.5 + i / (2 n)``
    and method ``j``'s score is ``10 + i + j / 10`` (rank ``r`` subtracts ``r``), so sorts have a
    known answer. ``reuse_pngs`` writes the same bytes for every picture (fast for big folders).
    ``arrays`` also writes each map's ``arrays/<stem>.npz`` as the command does: ``map``, the
    float16 `saved_map` (the map PNG's bump), and ``raw``, that map minus 0.25.
    """
    for sub in ("images", "overlays", "maps", *(("arrays",) if arrays else ())):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    target = "top1" if topk == 1 else f"topk:{topk}"
    run = {
        "camlens_version": "0.0.test",
        "model": "TinyNet (synthetic)",
        "framework": "torch",
        "methods": list(methods),
        "layer": "features",
        "target": target,
        "preprocess": {
            "preset": "imagenet",
            "size": [224, 224],
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "layout": "NCHW",
        },
        "cmap": "jet",
        "alpha": 0.5,
        "started": "2025-11-29T22:59:00+00:00",
        "command": ["camlens", "explain", "--model", "tiny.pt", *images],
    }
    (folder / "run.json").write_text(json.dumps(run), encoding="utf-8")
    shared = _pictures(0, 0, size) if reuse_pngs else None
    lines = []
    n = len(images)
    for i, image in enumerate(images):
        key = f"{i:04d}-{_safe(Path(image).stem)}"
        pictures = shared or _pictures(i, len(methods), size)
        (folder / "images" / f"{key}.png").write_bytes(pictures[0])
        unit, name = classes[i % len(classes)]
        probability = 0.5 + i / (2 * n)
        for j, method in enumerate(methods):
            for rank in range(topk):
                suffix = f"__t{rank}" if rank else ""
                stem = f"{key}__{method}{suffix}"
                overlay, cam_map = pictures[1 + 2 * j : 3 + 2 * j] if not shared else pictures[1:3]
                (folder / "overlays" / f"{stem}.png").write_bytes(overlay)
                (folder / "maps" / f"{stem}.png").write_bytes(cam_map)
                row: dict[str, Any] = {
                    "image": image,
                    "key": key,
                    "method": method,
                    "layer": "features",
                    "target": target,
                    "unit": unit + rank,
                    "unit_name": name if rank == 0 else None,
                    "score": 10.0 + i + j / 10 - rank,
                    "score_kind": "logit",
                    "prediction": {"unit": unit, "name": name, "probability": probability},
                    "image_file": f"images/{key}.png",
                    "overlay": f"overlays/{stem}.png",
                    "map": f"maps/{stem}.png",
                    "peak": [size[0] // 2, size[1] // 2],
                    "height": size[0],
                    "width": size[1],
                    "seconds": 0.01,
                }
                if topk > 1:
                    row["rank"] = rank
                if arrays:
                    saved = saved_map(i, j, size)
                    np.savez(folder / "arrays" / f"{stem}.npz", map=saved, raw=saved - 0.25)
                    row["arrays"] = f"arrays/{stem}.npz"
                if metrics:
                    row["metrics"] = {
                        "deletion_auc": round(0.1 + 0.01 * ((7 * i + j) % 10), 4),
                        "insertion_auc": round(0.9 - 0.02 * i, 4),
                    }
                lines.append(json.dumps(row))
    (folder / "results.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    if failures:
        (folder / "failures.jsonl").write_text(
            "".join(json.dumps({"image": im, "error": err}) + "\n" for im, err in failures),
            encoding="utf-8",
        )
    if compare is not None:
        (folder / "compare.json").write_text(json.dumps(compare), encoding="utf-8")
    return folder


def saved_map(image: int, method: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """Return the float16 map `make_run_folder` saves for image ``image`` and method ``method``."""
    return blob(100 * image + method, size).astype(np.float16)


def _pictures(seed: int, methods: int, size: tuple[int, int]) -> list[bytes]:
    """Return an image's PNG, then an (overlay, map) pair of PNGs per method."""
    image = photo(seed, size)
    encoded = [png_bytes(image)]
    for j in range(max(methods, 1)):
        cam_map = blob(100 * seed + j, size)
        encoded += [png_bytes(np.asarray(camlens.overlay(image, cam_map))), png_bytes(cam_map)]
    return encoded


def _safe(stem: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:40] or "image"
