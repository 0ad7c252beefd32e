"""Bearer tokens for the routes that can require one (`/admin/*`, `/feedback`, `/metrics`)."""

from __future__ import annotations

import hmac

from pydantic import SecretStr
from starlette.requests import Request


def authorized(request: Request, token: SecretStr | None) -> bool:
    """True when no token is required, or the request's bearer token equals it (compared in
    constant time, so the answer's timing does not leak how much of a guess was right)."""
    if token is None:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.get_secret_value().encode()
    )
