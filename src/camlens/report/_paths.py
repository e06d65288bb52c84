"""Image paths as the report shows them: relative to the inputs given, never absolute."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Any

__all__ = ["ShownPaths"]

_GLOB_CHARS = re.compile(r"[*?\[]")
_WINDOWS = re.compile(r"^[A-Za-z]:|\\")


def _pure(text: str) -> PurePath:
    """Return ``text`` as a path of the system that wrote it (backslashes or a drive: Windows)."""
    return PureWindowsPath(text) if _WINDOWS.search(text) else PurePosixPath(text)


def _base(text: str) -> PurePath:
    """Return the folder an input names: itself, or for a glob the folder before its wildcard."""
    match = _GLOB_CHARS.search(text)
    if match is not None:
        head = text[: match.start()]
        text = head[: max(head.rfind("/"), head.rfind("\\")) + 1] or "."
    return _pure(text)


def _join(name: str, rest: Sequence[str]) -> str:
    return "/".join([name, *rest] if name else rest)


class ShownPaths:
    """Turns the image paths a run recorded into the text the report shows.

    A relative path (a relative input: ``photos``, ``../in``, ``eyes/*.jpg``) is shown as
    recorded, which is as typed. An absolute one under one of the inputs given to `camlens
    explain` (``run.json``'s ``inputs``: the files, folders and globs as typed) is shown from
    that input's own name on: input ``/data/fundus`` and image ``/data/fundus/left/a.png`` read
    ``fundus/left/a.png``; an input file reads as its name; ``/data/eyes/*.jpg`` keeps
    ``eyes/``. An absolute path under no recorded input (an older run, a resumed run given
    other inputs) is shown from its images' common folder on, by the same rule. A URL is shown
    as recorded.
    """

    def __init__(self, inputs: Any, images: Sequence[str]) -> None:
        """Prepare for ``images``, given ``run.json``'s ``inputs`` (None or not a list: none)."""
        given = inputs if isinstance(inputs, list) else []
        self._bases = [_base(t) for t in given if isinstance(t, str) and t and "://" not in t]
        unplaced = [
            p for p in map(_pure, images) if p.is_absolute() and self._under_input(p) is None
        ]
        self._common = _common_folder(unplaced)

    def _under_input(self, path: PurePath) -> str | None:
        for base in self._bases:
            if type(base) is not type(path):
                continue
            if path == base:
                return path.name
            if path.is_relative_to(base):
                return _join(base.name, path.relative_to(base).parts)
        return None

    def __call__(self, image: str) -> str:
        """Return how ``image`` (a recorded path) is shown."""
        path = _pure(image)
        if "://" in image or not path.is_absolute():
            return image
        shown = self._under_input(path)
        if shown is not None:
            return shown
        common = self._common
        if common is not None and type(common) is type(path) and path.is_relative_to(common):
            return _join(common.name, path.relative_to(common).parts)
        return image


def _common_folder(paths: Sequence[PurePath]) -> PurePath | None:
    """Return the deepest folder that holds every path (all of one kind), or None."""
    if not paths or len({type(p) for p in paths}) != 1:
        return None
    parts = paths[0].parent.parts
    for path in paths[1:]:
        other = path.parent.parts
        n = 0
        while n < min(len(parts), len(other)) and parts[n] == other[n]:
            n += 1
        parts = parts[:n]
    return type(paths[0])(*parts) if parts else None
