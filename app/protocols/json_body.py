"""JSON bodies: orjson for speed; the standard library only for bodies orjson refuses.

What is accepted beyond strict JSON, and why:

- NaN/Infinity/-Infinity literals (pandas writes them): they decode to float NaN/inf and the
  validator reports them as `non_finite`.
- Numbers beyond float64 or 64-bit integers (`1e400`, a 400-digit integer): read as float64,
  so they become ±inf (reported as `non_finite`) or a large float (`out_of_range`).
- A UTF-8 byte order mark, which RFC 8259 lets parsers ignore.

What is refused (DecodeError, never forwarded): bytes that are not UTF-8, strings holding lone
surrogates (`"\\ud800"`: no UTF-8 encoding exists for them), documents nested more deeply than
the parsers allow, and objects that name the same key twice (a model server may keep the other
value than the one validated).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import orjson

from app.errors import DecodeError

_BOM = "\ufeff"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_COLON = ord(":")
_KEY_SEPARATOR = b'":'
_SPACED_SEPARATORS = (b" :", b"\n:", b"\r:", b"\t:")


def loads(body: bytes) -> Any:
    """Parse a JSON body (see the module docstring for what is accepted beyond strict JSON).

    Raises:
        DecodeError: empty, not UTF-8, not JSON, nested too deeply or holding lone surrogates.
    """
    if not body.strip():
        raise DecodeError("request body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        first_error = exc
    # Only bodies orjson refused pay for the second, slower parse.
    text = _utf8(body)
    try:
        doc = json.loads(text, parse_int=_int)
    except RecursionError:
        raise DecodeError("body is nested too deeply") from None
    except ValueError:
        raise DecodeError(f"body is not valid JSON: {first_error}") from None
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(doc)
    return doc


def _utf8(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"body is not valid UTF-8: byte 0x{body[exc.start]:02x} at offset {exc.start}"
        ) from None
    return text[1:] if text.startswith(_BOM) else text


def _int(text: str) -> int | float:
    """An integer literal; past 64 bits (or Python's digit limit) it is read as float64."""
    if len(text) <= 19:
        return int(text)
    value = int(text) if len(text) <= 4000 else None
    if value is not None and -(2**63) <= value < 2**64:
        return value
    return float(text)


def _refuse_lone_surrogates(doc: Any) -> None:
    stack: list[tuple[Any, str]] = [(doc, "body")]
    while stack:
        value, where = stack.pop()
        if type(value) is str:
            _check_text(value, where)
        elif type(value) is list:
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(value))
        elif type(value) is dict:
            for key, v in value.items():
                _check_text(key, f"a key of {where}")
                stack.append((v, f"{where}.{key}"))


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        raise DecodeError(
            f"{where} holds a lone surrogate \\u{code:04x}, which is not valid Unicode"
        ) from None


def require_object(doc: Any, what: str = "body") -> dict[str, Any]:
    """Check that a decoded document is a JSON object."""
    if not isinstance(doc, dict):
        raise DecodeError(f"{what} must be a JSON object, not {json_type(doc)}")
    return doc


_JSON_TYPES = {list: "an array", str: "a string", bool: "a boolean", int: "a number"}


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, with an article ("an array", "null", …)."""
    if value is None:
        return "null"
    if type(value) is float:
        return "a number"
    return _JSON_TYPES.get(
        type(value), "an object" if type(value) is dict else type(value).__name__
    )


def count_keys(value: Any) -> int:
    """The number of object keys in a (small) JSON value, nested ones included."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            total += len(item)
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return total


def check_unique_keys(body: bytes, counted: int) -> None:
    """Refuse a body in which some object names the same key twice.

    `counted` is the number of keys in the decoded document as the codec counted them (a
    parsed dict keeps one entry per distinct key). Outside strings, JSON has one colon per key,
    so when the body's colons (counted in C) equal `counted`, every key was distinct. A colon
    inside a string breaks the tie; then tightly written keys (`":`, nothing spaced out) are
    counted instead, and only if doubt remains is the body parsed again, slowly, to find the
    duplicate (or clear it: an object the codec did not count, a `\\":` inside a string).

    Raises:
        DecodeError: an object has a duplicate key; the message names the key and where.
    """
    if _colons(body) == counted:
        return
    if body.count(_KEY_SEPARATOR) == counted and not any(s in body for s in _SPACED_SEPARATORS):
        return
    _find_duplicate_key(body)


_NUMPY_COUNT_FROM = 8192
"""From this many bytes numpy counts a byte about five times faster than `bytes.count`."""


def _colons(body: bytes) -> int:
    if len(body) < _NUMPY_COUNT_FROM:
        return body.count(b":")
    return int(np.count_nonzero(np.frombuffer(body, np.uint8) == _COLON))


class _Duplicate(dict[str, Any]):
    """An object that named `key` twice (only built by the slow, exact parse)."""

    key = ""


class _Found(Exception):
    pass


def _pairs_or_raise(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Found
    return out


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            dup = _Duplicate(out)
            dup.key = key
            return dup
        out[key] = value
    return out


def _find_duplicate_key(body: bytes) -> None:
    text = _utf8(body)
    try:
        json.loads(text, object_pairs_hook=_pairs_or_raise, parse_int=_int)
        return  # every key was distinct
    except _Found:
        pass
    except (RecursionError, ValueError):
        return  # the first parse succeeded; nothing more to learn here
    doc = json.loads(text, object_pairs_hook=_pairs, parse_int=_int)
    stack: list[tuple[Any, str]] = [(doc, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, _Duplicate):
            place = f"the object at {where}" if where else "the body"
            raise DecodeError(
                f"key '{value.key}' appears more than once in {place}; send each key once"
            )
        if type(value) is list:
            stack.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, dict):
            prefix = f"{where}." if where else ""
            stack.extend((v, f"{prefix}{k}") for k, v in reversed(list(value.items())))
