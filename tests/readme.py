"""The README's code blocks, for the tests that run them."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def python_block_after(heading: str) -> str:
    """Return the first ```python block of the README after the text ``heading``."""
    section = README.read_text(encoding="utf-8")
    section = section[section.index(heading) :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("\n```", start)]
