"""How raw wire values map to categories, booleans and tokens — shared by builder and validator,
so training and serving see a value the same way."""

from __future__ import annotations

import math
from typing import Any

_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


def is_missing(value: Any) -> bool:
    """None, or a float NaN (how pandas and many clients spell 'missing')."""
    return value is None or (type(value) is float and value != value)


def category_key(value: Any) -> str | None:
    """The canonical string of a categorical value, or None when it cannot be a category.

    Integral floats fold to their integer text, so `3`, `3.0` and `"3"` are one category.
    """
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return str(value)
    if t is float:
        if math.isfinite(value) and value == int(value):
            return str(int(value))
        return repr(value)
    return None


def boolean_value(value: Any) -> bool | None:
    """True/False for booleans, 0/1 and their usual spellings; None when it is not a boolean."""
    t = type(value)
    if t is bool:
        return value  # type: ignore[no-any-return]
    if t is int or t is float:
        if value == 1:
            return True
        if value == 0:
            return False
        return None
    if t is str:
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    return None


def token_count(text: str) -> int:
    """Whitespace-separated words: the length measure of text features (cheap on the hot path)."""
    return len(text.split())


def tokens(text: str) -> list[str]:
    """Lower-cased whitespace tokens with surrounding punctuation stripped."""
    out = []
    for raw in text.lower().split():
        tok = raw.strip(".,;:!?\"'()[]{}")
        if tok:
            out.append(tok)
    return out
