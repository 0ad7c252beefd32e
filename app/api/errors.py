"""The one place where InferSight errors become HTTP status codes and JSON bodies."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import Response

from app.errors import (
    AuthError,
    DecodeError,
    InferSightError,
    NotEnabled,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    UnsupportedMediaType,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
    ValidationFailed,
)

_STATUS: list[tuple[type[InferSightError], int]] = [
    (DecodeError, 400),
    (PayloadTooLarge, 413),
    (UnsupportedMediaType, 415),
    (RequestTimeout, 408),
    (ValidationFailed, 422),
    (RequestError, 400),
    (AuthError, 401),
    (NotEnabled, 404),
    (UpstreamTimeout, 504),
    (UpstreamUnavailable, 502),
    (UpstreamBadResponse, 502),
]


def status_for(exc: InferSightError) -> int:
    """The HTTP status of an InferSight error (500 only for errors that should not happen)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def _document(
    error_type: str, message: str, details: list[dict[str, Any]], string_error: bool
) -> dict[str, Any]:
    if string_error:
        return {"error": message, "type": error_type, "details": details}
    return {"error": {"type": error_type, "message": message, "details": details}}


def error_body(
    error_type: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    *,
    string_error: bool = False,
) -> bytes:
    """`{"error": {"type", "message", "details"}}` as JSON bytes.

    With `string_error` (the routes of a protocol whose clients read `{"error": "<message>"}`:
    Open Inference Protocol, TF-Serving), the same three fields as
    `{"error": "<message>", "type", "details"}`. Text that orjson refuses (a lone surrogate, say)
    is escaped by the standard library instead; details that neither can encode are dropped
    rather than failing the response.
    """
    doc = _document(error_type, message, details or [], string_error)
    try:
        return orjson.dumps(doc, default=repr)
    except orjson.JSONEncodeError:
        pass
    try:
        return json.dumps(doc, default=repr, ensure_ascii=True, allow_nan=False).encode()
    except (ValueError, RecursionError):  # keep the type and message, drop the details
        text = message.encode("utf-8", "replace").decode("utf-8")
        return orjson.dumps(_document(error_type, text, [], string_error))


def error_response(
    exc: InferSightError, headers: dict[str, str] | None = None, *, string_error: bool = False
) -> Response:
    """The JSON error response for an InferSight error (`string_error` as in `error_body`)."""
    extra = dict(headers or {})
    if isinstance(exc, AuthError):
        extra["www-authenticate"] = "Bearer"
    return Response(
        error_body(exc.type_name, exc.message, exc.details, string_error=string_error),
        status_code=status_for(exc),
        media_type="application/json",
        headers=extra,
    )
