"""JSON bodies: orjson for speed; the standard library only for NaN/Infinity literals."""

from __future__ import annotations

import json
from typing import Any

import orjson

from app.errors import DecodeError


def loads(body: bytes) -> Any:
    """Parse a JSON body.

    Pandas-style NaN/Infinity literals are accepted (they decode to float NaN/inf and the
    validator reports them as `non_finite`); anything else that is not JSON is a DecodeError.
    """
    if not body.strip():
        raise DecodeError("request body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        first_error = exc
    # orjson refuses NaN/Infinity literals and numbers beyond float64/int64 that the standard
    # library reads; only bodies orjson refused pay for the second parse.
    try:
        return json.loads(body)
    except RecursionError:
        raise DecodeError("body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise DecodeError(f"body is not valid JSON: {first_error}") from None


def require_object(doc: Any, what: str = "body") -> dict[str, Any]:
    """Check that a decoded document is a JSON object."""
    if not isinstance(doc, dict):
        raise DecodeError(f"{what} must be a JSON object, not {type(doc).__name__}")
    return doc
