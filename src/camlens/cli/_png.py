"""A fast PNG writer for the command's overlays and maps.

Pillow filters every row adaptively (it tries all five PNG filters per row), which dominates the
cost of writing a picture. Here every row uses the "Up" filter (the row minus the row above,
computed for the whole picture at once) and zlib's run-length strategy at level 1: 2-3x faster,
files about a fifth larger, pixels identical (any PNG reader decodes them).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_UP = 2
_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # gray, RGB, RGBA


def encode_png(pixels: np.ndarray) -> bytes:
    """Return uint8 pixels ``(H, W)`` or ``(H, W, C)``, C in 1, 3, 4, as PNG bytes."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or 0 in pixels.shape:
        raise ValueError(
            f"expected non-empty uint8 (H, W[, C]) pixels; got {pixels.dtype} {pixels.shape}"
        )
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels not in _COLOUR_TYPES:
        raise ValueError(f"PNG takes 1, 3 or 4 channels; got {channels}")
    height, width = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).reshape(height, width * channels)
    scanlines = np.empty((height, width * channels + 1), dtype=np.uint8)
    scanlines[:, 0] = _FILTER_UP
    scanlines[:, 1:] = rows
    scanlines[1:, 1:] -= rows[:-1]  # uint8 arithmetic wraps modulo 256, as PNG's filters do
    compressor = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    data = compressor.compress(scanlines.tobytes()) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[channels], 0, 0, 0)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    """Return one PNG chunk: length, type, data, CRC of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
