"""Category rules: which category a text belongs to and where it goes first."""

from __future__ import annotations

from collections.abc import Sequence

from storage.models import Category


def detect_category(text: str, categories: Sequence[Category]) -> Category | None:
    """The category whose keywords match `text` best, else the fallback category.

    The category with the most matching keywords wins; a tie goes to the longest matching
    keyword (more specific), then to the category defined first.
    """
    best: tuple[int, int, int] | None = None
    chosen: Category | None = None
    for index, category in enumerate(categories):
        hits = [word for word in category.keywords if word and word in text]
        if not hits:
            continue
        score = (len(hits), max(len(word) for word in hits), -index)
        if best is None or score > best:
            best, chosen = score, category
    if chosen is not None:
        return chosen
    fallbacks = [category for category in categories if category.is_fallback]
    return fallbacks[0] if fallbacks else None
