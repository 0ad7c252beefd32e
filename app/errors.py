"""InferSight's error tree. HTTP-agnostic: `app/api/errors.py` maps it to status codes.

```
InferSightError
├── ConfigError                 bad settings or CLI arguments
├── ProfileError                a profile that cannot be loaded or built (names the field)
├── RequestError                the client's request is at fault (never forwarded)
│   ├── DecodeError             the body cannot be decoded for the protocol
│   ├── PayloadTooLarge         body or row count over the configured limit
│   ├── UnsupportedMediaType    a Content-Type or Content-Encoding the protocol does not accept
│   ├── RequestTimeout          the body did not arrive in time
│   └── ValidationFailed        an `enforce` violation in at least one row
├── AuthError                   missing or wrong bearer token
├── NotEnabled                  a route whose feature is not configured
└── UpstreamError               the model server is at fault
    ├── UpstreamUnavailable     cannot connect, or the connection broke
    │   └── CircuitOpen         failing fast: the circuit breaker is open
    ├── UpstreamTimeout         no answer within the configured timeout
    └── UpstreamBadResponse     answered something that is not HTTP we can relay
```

Errors carry data (`details`) rather than pre-rendered text, so every interface
(HTTP, CLI, logs) can show them its own way.
"""

from __future__ import annotations

from typing import Any


class InferSightError(Exception):
    """Base of every error InferSight raises on purpose."""

    type_name = "infersight_error"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[dict[str, Any]] = details or []


class ConfigError(InferSightError):
    """Settings or arguments that cannot work together."""

    type_name = "config_error"


class ProfileError(InferSightError):
    """A profile file that is missing, corrupt or invalid; `field` names the culprit."""

    type_name = "profile_error"

    def __init__(self, message: str, field: str | None = None, source: str | None = None) -> None:
        prefix = f"{source}: " if source else ""
        where = f" (field '{field}')" if field else ""
        super().__init__(f"{prefix}{message}{where}")
        self.field = field
        self.source = source


class RequestError(InferSightError):
    """The client's request is at fault; it is never forwarded."""

    type_name = "bad_request"


class DecodeError(RequestError):
    """The body is not valid for the protocol (bad JSON, wrong shape, unknown datatype)."""

    type_name = "decode_error"


class PayloadTooLarge(RequestError):
    """The body or the number of rows exceeds the configured limit."""

    type_name = "payload_too_large"


class UnsupportedMediaType(RequestError):
    """The body is declared as a media type (or content coding) the protocol does not accept."""

    type_name = "unsupported_media_type"


class RequestTimeout(RequestError):
    """The request's body did not arrive within the configured time."""

    type_name = "request_timeout"


class ValidationFailed(RequestError):
    """At least one row has a violation whose policy is `enforce`."""

    type_name = "validation_error"


class AuthError(InferSightError):
    """A protected route was called without the right bearer token."""

    type_name = "unauthorized"


class NotEnabled(InferSightError):
    """The route belongs to a feature that this deployment has not configured."""

    type_name = "not_enabled"


class UpstreamError(InferSightError):
    """The model server could not give a usable answer."""

    type_name = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    """Connecting to the model server failed, or the connection broke mid-request."""

    type_name = "upstream_unavailable"


class CircuitOpen(UpstreamUnavailable):
    """The circuit breaker is open: the model server failed repeatedly, so the request fails
    fast without being sent."""

    type_name = "upstream_circuit_open"


class UpstreamTimeout(UpstreamError):
    """The model server did not answer within the configured timeout."""

    type_name = "upstream_timeout"


class UpstreamBadResponse(UpstreamError):
    """The model server's answer was not a relayable HTTP response."""

    type_name = "upstream_bad_response"
