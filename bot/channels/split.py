"""Cutting a long text into the parts a platform accepts in one message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal


def _bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def split_text(
    message: str, limit: int, *, unit: Literal["characters", "bytes"] = "characters"
) -> list[str]:
    """`message` cut into parts of at most `limit` characters (or UTF-8 bytes), at a line
    break where one falls in the second half of a part; the line breaks at cuts are dropped.

    A text within the limit is one part (an empty text too).
    """
    size: Callable[[str], int] = len if unit == "characters" else _bytes
    parts: list[str] = []
    rest = message
    while size(rest) > limit:
        # The longest prefix within the limit (in characters, for a limit in bytes).
        fits = limit if unit == "characters" else _fitting(rest, limit)
        cut = rest.rfind("\n", 0, fits)
        if cut <= fits // 2:
            cut = fits
        parts.append(rest[:cut])
        rest = rest[cut:].lstrip("\n")
    if rest or not parts:
        parts.append(rest)
    return parts


def _fitting(text: str, limit: int) -> int:
    """How many characters of `text` fit in `limit` UTF-8 bytes (at least one)."""
    used = 0
    for index, char in enumerate(text):
        used += _bytes(char)
        if used > limit:
            return max(index, 1)
    return len(text)
