"""Finding and reading images: files, folders (recursively) and globs; any size, gray or colour."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from camlens._checks import positive_int
from camlens.errors import BadInputError, CamlensWarning

#: File name extensions a folder scan picks up (lower case). Animated pictures (GIF, APNG,
#: WebP) are read on their first frame.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".apng", ".gif", ".tif", ".tiff", ".bmp", ".webp"}
)
#: Formats whose extra frames are an animation's (or a multi-page file's) pictures. An MPO
#: (a camera's multi-picture JPEG) is left out: its other frames are previews or depth maps.
_NOT_ANIMATED = frozenset({"MPO"})
#: Pillow's decompression-bomb message, for the pixel count it read from the header.
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
# Pillow warns about a huge image with ``warnings.warn``; camlens says it in a note instead. The
# filter that silences Pillow's warning is process-wide while it is in place
# (``warnings.catch_warnings`` is not thread-safe), so the threads that read images take turns
# while it is: only for opening a file (the header), and for the whole read of a huge image.
_QUIET_PILLOW = threading.Lock()

_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ImageList:
    """What :func:`find_images` found.

    Attributes:
        images: The image files, in a stable order: arguments in the order given, each
            folder's files sorted by path.
        ignored: Files inside the given folders that are not images by their extension.
        missing: Arguments that match nothing (a missing path, an empty glob).
    """

    images: tuple[Path, ...]
    ignored: tuple[Path, ...]
    missing: tuple[str, ...]


def find_images(sources: Iterable[str | os.PathLike[str]]) -> ImageList:
    """Expand files, folders (recursively) and glob patterns into a list of image files.

    A file named explicitly is always taken (whatever its extension: reading it will tell);
    inside folders only files with an image extension are, the others are listed as ignored.
    Each file appears once.
    """
    images: list[Path] = []
    ignored: list[Path] = []
    missing: list[str] = []
    seen: set[Path] = set()

    def add(path: Path, explicit: bool) -> None:
        key = path.resolve()
        if key in seen:
            return
        seen.add(key)
        if explicit or path.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(path)
        else:
            ignored.append(path)

    for source in sources:
        text = os.fspath(source)
        if Path(text).exists():
            matches = [Path(text)]
        elif _GLOB_CHARS.search(text):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
        else:
            matches = []
        if not matches:
            missing.append(text)
        for match in matches:
            if match.is_dir():
                for path in sorted(p for p in match.rglob("*") if p.is_file()):
                    add(path, explicit=False)
            else:
                add(match, explicit=not _GLOB_CHARS.search(text))
    return ImageList(tuple(images), tuple(ignored), tuple(missing))


def read_image(
    path: str | os.PathLike[str], *, channels: int = 3, max_size: int | None = None
) -> np.ndarray:
    """Read an image file as uint8 ``(H, W, channels)``, upright (EXIF orientation applied).

    Grayscale images are repeated to three channels and colour images converted to gray for
    ``channels=1``; 16-bit and float images are scaled to 8 bits; transparency is dropped (pixels
    keep their colour). With ``max_size``, an image whose longer side exceeds it is scaled down
    (aspect kept, antialiased; JPEGs are decoded at a reduced scale directly, which is much
    faster for large photos). An animated image (GIF, APNG, WebP) or a multi-page TIFF gives its
    first frame, as Pillow reads it.

    Warns:
        CamlensWarning: One for each remark on the file: an animation, of which only the first
            frame is read; an image over Pillow's decompression-bomb warning threshold
            (``PIL.Image.MAX_IMAGE_PIXELS``), which is read anyway. Pillow's own
            ``DecompressionBombWarning`` is not shown.

    Raises:
        BadInputError: Saying why a file cannot be read, including an image over twice
            ``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow's decompression-bomb limit).
    """
    pixels, notes = read_image_and_notes(path, channels=channels, max_size=max_size)
    for note in notes:
        warnings.warn(note, CamlensWarning, stacklevel=2)
    return pixels


def read_image_and_notes(
    path: str | os.PathLike[str], *, channels: int = 3, max_size: int | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Read an image as :func:`read_image` does; return its pixels and the remarks on it.

    The remarks are :func:`read_image`'s warnings, as one-line messages that start with the
    path (the command line prints them in its summary instead of warning from its threads).
    """
    if channels not in (1, 3):
        raise BadInputError(f"channels must be 1 or 3; got {channels!r}")
    max_size = positive_int(max_size, "max_size", optional=True)
    path = Path(path)
    notes: list[str] = []
    try:
        if path.stat().st_size == 0:
            raise BadInputError(f"{path}: the file is empty (0 bytes)")
        with _quiet_pillow():
            im = Image.open(path)
        with im:
            with _quiet_pillow():  # counting a GIF's frames reads each frame's header
                frames = _frames(im)
            limit = Image.MAX_IMAGE_PIXELS
            pixels = max(1, im.size[0]) * max(1, im.size[1])
            huge = limit is not None and pixels > limit
            if frames > 1:
                notes.append(f"{path}: animated ({frames} frames): only its first frame is used")
            if limit is not None and huge:
                notes.append(
                    f"{path}: a huge image ({_megapixels(pixels)} megapixels, over Pillow's "
                    f"decompression-bomb warning threshold of {_megapixels(limit)}); read "
                    "anyway: check that the file is the picture you meant"
                )
            with _quiet_pillow() if huge else nullcontext():
                if (draft := fitted_size(im.size, max_size)) is not None:
                    im.draft("RGB" if channels == 3 else "L", draft)
                shown = ImageOps.exif_transpose(im)
                if (fitted := fitted_size(shown.size, max_size)) is not None:
                    shown = shown.resize(fitted, Image.Resampling.LANCZOS, reducing_gap=3)
                return _to_uint8(shown, channels), tuple(notes)
    except BadInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadInputError(_bomb_message(path, exc)) from exc
    except UnidentifiedImageError as exc:
        raise BadInputError(f"{path}: not an image Pillow can read ({exc})") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        # Truncated or corrupt data surfaces as OSError/ValueError/SyntaxError from the decoders.
        raise BadInputError(f"{path}: the image is corrupt or truncated ({exc})") from exc


@contextmanager
def _quiet_pillow() -> Iterator[None]:
    """Hide Pillow's ``DecompressionBombWarning`` (camlens notes a huge image itself)."""
    with _QUIET_PILLOW, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _frames(im: Image.Image) -> int:
    """Return the number of frames of an animated or multi-page image; 1 for any other."""
    if im.format in _NOT_ANIMATED or not getattr(im, "is_animated", False):
        return 1
    return int(getattr(im, "n_frames", 1))


def _bomb_message(path: Path, exc: Image.DecompressionBombError) -> str:
    """Return the failure message for an image over Pillow's decompression-bomb limit."""
    match = _BOMB_PIXELS.search(str(exc))
    size = f"{_megapixels(int(match.group(1)))} megapixels" if match else "the image"
    limit = Image.MAX_IMAGE_PIXELS
    bound = "" if limit is None else f" of {_megapixels(2 * limit)}"
    return (
        f"{path}: {size} is over Pillow's decompression-bomb limit{bound}; downscale or tile the "
        "image first (in Python, raising PIL.Image.MAX_IMAGE_PIXELS lets a file you trust through)"
    )


def _megapixels(pixels: int) -> str:
    """Return a pixel count in megapixels to three significant digits (whole above 100)."""
    value = pixels / 1e6
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def fitted_size(size: tuple[int, int], max_size: int | None) -> tuple[int, int] | None:
    """Return ``size`` (width, height) scaled so that its longer side is ``max_size`` (aspect
    kept, at least one pixel each), or ``None`` if it already fits (or ``max_size`` is None)."""
    if max_size is None or max(size) <= max_size:
        return None
    scale = max_size / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _to_uint8(im: Image.Image, channels: int) -> np.ndarray:
    """Return a loaded Pillow image as uint8 gray or RGB pixels."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        im = Image.fromarray(gray, mode="L")
    target = "L" if channels == 1 else "RGB"
    if im.mode != target:
        im = im.convert(target)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def image_key(path: str | os.PathLike[str]) -> str:
    """Return a short file-name-safe key for an image: its stem plus a hash of its path.

    The key has no path separators and no leading dot, so files named after it stay in the
    folder they are written to, whatever the image was called (``../../x.jpg``, ``<b>.png``).
    """
    text = os.fspath(path)
    stem = _UNSAFE.sub("_", Path(text).stem).strip("._-")[:40] or "image"
    digest = hashlib.sha1(os.path.abspath(text).encode("utf-8", "surrogatepass")).hexdigest()
    return f"{stem}-{digest[:10]}"
