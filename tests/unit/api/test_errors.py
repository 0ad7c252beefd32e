"""The two error shapes: the sidecar's object and the protocols' string."""

from __future__ import annotations

import json

import pytest

from app.api.errors import error_body, error_response
from app.errors import AuthError, UpstreamTimeout, ValidationFailed

DETAILS = [{"row": 1, "feature": "age", "kind": "wrong_type", "value": "forty"}]


def test_the_sidecar_shape_nests_type_message_and_details() -> None:
    doc = json.loads(error_body("validation_error", "row 1, feature 'age'", DETAILS))
    assert doc == {
        "error": {"type": "validation_error", "message": "row 1, feature 'age'", "details": DETAILS}
    }


def test_the_protocol_shape_puts_the_message_under_error() -> None:
    doc = json.loads(
        error_body("validation_error", "row 1, feature 'age'", DETAILS, string_error=True)
    )
    assert doc == {"error": "row 1, feature 'age'", "type": "validation_error", "details": DETAILS}


@pytest.mark.parametrize("string_error", [False, True])
def test_text_orjson_refuses_is_escaped_in_either_shape(string_error: bool) -> None:
    body = error_body(
        "decode_error", "bad \ud800 text", [{"value": "\udfff"}], string_error=string_error
    )
    doc = json.loads(body)
    message = doc["error"] if string_error else doc["error"]["message"]
    assert message == "bad \ud800 text"


@pytest.mark.parametrize("string_error", [False, True])
def test_details_that_cannot_be_encoded_are_dropped_not_fatal(string_error: bool) -> None:
    nested: list[object] = []
    for _ in range(2000):  # deeper than either encoder recurses
        nested = [nested]
    body = error_body("decode_error", "deep", [{"value": nested}], string_error=string_error)
    doc = json.loads(body)
    details = doc["details"] if string_error else doc["error"]["details"]
    assert details == []


def test_responses_carry_the_status_and_the_chosen_shape() -> None:
    response = error_response(ValidationFailed("bad row", DETAILS), string_error=True)
    assert response.status_code == 422
    assert json.loads(response.body)["error"] == "bad row"
    assert error_response(UpstreamTimeout("slow")).status_code == 504
    auth = error_response(AuthError("token"))
    assert auth.status_code == 401
    assert auth.headers["www-authenticate"] == "Bearer"
    assert json.loads(auth.body)["error"]["type"] == "unauthorized"
