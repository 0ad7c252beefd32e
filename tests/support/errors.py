"""Reading the sidecar's errors on a protocol's routes in tests."""

from __future__ import annotations

import json
from typing import Any


def protocol_error(body: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """An error answered on a V2 or V1 route, `{"error": "<message>", "type", "details"}`,
    as `{"type", "message", "details"}` once its shape is checked (clients of those protocols,
    tritonclient among them, read `error` as a string)."""
    doc = body if isinstance(body, dict) else json.loads(body)
    assert set(doc) == {"error", "type", "details"}, doc
    assert isinstance(doc["error"], str), doc
    assert isinstance(doc["type"], str), doc
    assert isinstance(doc["details"], list), doc
    return {"type": doc["type"], "message": doc["error"], "details": doc["details"]}
