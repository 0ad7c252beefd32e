"""The OpenAPI document's view of routes whose bodies are read raw.

Inference calls are served by `InferenceRoutes` before the framework's router, and `/feedback`
parses its own body, so the framework cannot infer their request schemas. `document_api` adds
each protocol's inference paths as documented routes (`openapi_extra` carries the request body
and path parameters) and attaches the feedback schema and the responses of the other routes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from app.api.proxy import InferenceRoutes, RawResponse, passthrough
from app.protocols.codecs import CODECS
from app.protocols.v2 import DATATYPES

JSON = "application/json"

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message", "details"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}},
            },
        }
    },
}

STRING_ERROR_SCHEMA: dict[str, Any] = {
    "title": "ProtocolError",
    "description": "The protocol's own error shape (a string under `error`), with the type and "
    "details beside it.",
    "type": "object",
    "required": ["error", "type", "details"],
    "properties": {
        "error": {"type": "string"},
        "type": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
}

_SCALAR: dict[str, Any] = {"type": ["number", "boolean", "string"]}
_NULLABLE_SCALAR: dict[str, Any] = {"type": ["number", "boolean", "string", "null"]}
_PARAMETERS: dict[str, Any] = {"type": "object", "additionalProperties": _SCALAR}

V2_DATATYPES = sorted(DATATYPES)
"""The tensor datatypes the V2 codec decodes."""

_V2_TENSOR: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": V2_DATATYPES},
        "parameters": _PARAMETERS,
        "data": {
            "description": "Row-major values: flat, or nested to the tensor's shape.",
            "type": "array",
            "items": {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]},
        },
    },
}

V2_REQUEST: dict[str, Any] = {
    "title": "V2InferenceRequest",
    "description": "Open Inference Protocol (KServe V2) inference request, JSON tensors.",
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "inputs": {"type": "array", "minItems": 1, "items": _V2_TENSOR},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS},
            },
        },
    },
}

V2_RESPONSE: dict[str, Any] = {
    "title": "V2InferenceResponse",
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "datatype": {"type": "string"},
                    "parameters": _PARAMETERS,
                    "data": {"type": "array"},
                },
            },
        },
    },
}

_ROW: dict[str, Any] = {
    "description": "A row: an object by feature name, a list in feature order, or a scalar.",
    "anyOf": [
        {"type": "object", "additionalProperties": _NULLABLE_SCALAR},
        {"type": "array", "items": _NULLABLE_SCALAR},
        _NULLABLE_SCALAR,
    ],
}
_ROWS: dict[str, Any] = {"type": "array", "items": _ROW}
_COLUMNS: dict[str, Any] = {
    "description": "Columns: feature name to its values, one per row.",
    "type": "object",
    "additionalProperties": {"type": "array", "items": _NULLABLE_SCALAR},
}

V1_REQUEST: dict[str, Any] = {
    "title": "V1PredictRequest",
    "description": "TF Serving / KServe V1 predict request: `instances` (rows) or `inputs` "
    "(rows, or columns by name); not both.",
    "type": "object",
    "properties": {
        "signature_name": {"type": "string"},
        "instances": _ROWS,
        "inputs": {"anyOf": [_ROWS, _COLUMNS]},
    },
    "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
}

V1_RESPONSE: dict[str, Any] = {
    "title": "V1PredictResponse",
    "type": "object",
    "properties": {
        "predictions": {"type": "array"},
        "outputs": {"anyOf": [{"type": "array"}, {"type": "object"}]},
    },
}

MLFLOW_REQUEST: dict[str, Any] = {
    "title": "MLflowInvocationRequest",
    "description": "MLflow scoring server input: exactly one of `dataframe_split`, "
    "`dataframe_records`, `instances`, `inputs`; optional `params`.",
    "type": "object",
    "properties": {
        "dataframe_split": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "index": {"type": "array", "items": {"type": ["integer", "string"]}},
                "data": {"type": "array", "items": {"type": "array", "items": _NULLABLE_SCALAR}},
            },
        },
        "dataframe_records": {
            "type": "array",
            "items": {"type": "object", "additionalProperties": _NULLABLE_SCALAR},
        },
        "instances": {"anyOf": [_ROWS, _COLUMNS]},
        "inputs": {"anyOf": [_ROWS, _COLUMNS]},
        "params": {"type": "object", "additionalProperties": _NULLABLE_SCALAR},
    },
    "oneOf": [
        {"required": ["dataframe_split"]},
        {"required": ["dataframe_records"]},
        {"required": ["instances"]},
        {"required": ["inputs"]},
    ],
}

MLFLOW_CSV: dict[str, Any] = {
    "description": "CSV with a header row (pandas-readable).",
    "type": "string",
}

MLFLOW_RESPONSE: dict[str, Any] = {
    "title": "MLflowInvocationResponse",
    "anyOf": [
        {"type": "object", "required": ["predictions"]},
        {"type": "array"},
    ],
}

FEEDBACK_REQUEST: dict[str, Any] = {
    "title": "FeedbackRequest",
    "description": "Ground-truth labels for earlier predictions, matched by `request_id` and "
    "`row`, or by `key` (the configured `feedback.key_field`). `model` is required when "
    "several models are profiled.",
    "type": "object",
    "required": ["feedback"],
    "properties": {
        "feedback": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["label"],
                "properties": {
                    "request_id": {"type": "string", "minLength": 1},
                    "row": {"type": "integer", "minimum": 0, "default": 0},
                    "key": {"type": ["string", "integer"]},
                    "model": {"type": "string"},
                    "label": _SCALAR,
                },
            },
        }
    },
}

FEEDBACK_RESPONSE: dict[str, Any] = {
    "title": "FeedbackResponse",
    "type": "object",
    "required": ["received", "outcomes", "details"],
    "properties": {
        "received": {"type": "integer"},
        "outcomes": {"type": "object", "additionalProperties": {"type": "integer"}},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "outcome": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    },
}

_REQUESTS: dict[str, dict[str, Any]] = {
    "v2": {JSON: {"schema": V2_REQUEST}},
    "v1": {JSON: {"schema": V1_REQUEST}},
    "mlflow": {JSON: {"schema": MLFLOW_REQUEST}, "text/csv": {"schema": MLFLOW_CSV}},
}
_ANSWERS: dict[str, dict[str, Any]] = {
    "v2": V2_RESPONSE,
    "v1": V1_RESPONSE,
    "mlflow": MLFLOW_RESPONSE,
}
_NAME = {"name": "name", "in": "path", "required": True, "description": "Model name."}
_PATHS: dict[str, list[tuple[str, list[dict[str, Any]]]]] = {
    "v2": [
        (
            "/v2/models/{name}/infer",
            [{**_NAME, "schema": {"type": "string", "pattern": "^[^/]+$"}}],
        ),
        (
            "/v2/models/{name}/versions/{version}/infer",
            [
                {**_NAME, "schema": {"type": "string", "pattern": "^[^/]+$"}},
                {
                    "name": "version",
                    "in": "path",
                    "required": True,
                    "description": "Model version.",
                    "schema": {"type": "string", "pattern": "^[^/]+$"},
                },
            ],
        ),
    ],
    "v1": [
        (
            "/v1/models/{name}:predict",
            [{**_NAME, "schema": {"type": "string", "pattern": "^[^/:]+$"}}],
        )
    ],
    "mlflow": [("/invocations", [])],
}


def _error(description: str, schema: dict[str, Any] = ERROR_SCHEMA) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def inference_responses(protocol: str) -> dict[int | str, dict[str, Any]]:
    """The documented answers of an inference call."""
    schema = STRING_ERROR_SCHEMA if CODECS[protocol].string_errors else ERROR_SCHEMA
    return {
        200: {
            "description": "The model server's answer, relayed unchanged.",
            "content": {JSON: {"schema": _ANSWERS[protocol]}},
        },
        400: _error("The body cannot be decoded for the protocol (never forwarded).", schema),
        413: _error("The body or its row count is over the configured limit.", schema),
        415: _error("The body's Content-Type is not one the protocol accepts.", schema),
        422: _error("An `enforce` violation in at least one row; details list each one.", schema),
        502: _error(
            "The model server is unreachable, broke the connection or answered garbage.", schema
        ),
        504: _error("The model server did not answer within the configured timeout.", schema),
        "default": {"description": "Any other status: the model server's own answer, relayed."},
    }


def _as_response(answer: Response | RawResponse) -> Response:
    if isinstance(answer, Response):
        return answer
    response = Response(answer.body, status_code=answer.status_code)
    response.raw_headers = answer.raw_headers
    return response


async def _inference(request: Request) -> Response:
    """Serve an inference call exactly as the fast path in front of the router does."""
    routes: InferenceRoutes | None = getattr(request.app, "inference", None)
    match = routes.pattern.match(request.scope["path"]) if routes is not None else None
    if routes is None or match is None:  # not an inference path for the fast path either
        state = request.app.state.infersight
        string_error = routes.proxy.codec.string_errors if routes is not None else False
        return _as_response(await passthrough(request, state.upstream, string_error=string_error))
    groups = match.groupdict()
    return _as_response(
        await routes.proxy.handle(request, groups.get("name"), groups.get("version"))
    )


_EXTRA_RESPONSES: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("/readyz", "get"): {"503": {"description": "Not ready: the model server's probe failed."}},
    ("/metrics", "get"): {
        "200": {
            "description": "Prometheus exposition.",
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        },
        "401": _error("A bearer token is configured for /metrics and was not given."),
    },
    ("/feedback", "post"): {
        "200": {
            "description": "The count of each outcome and a line for every label not matched.",
            "content": {JSON: {"schema": FEEDBACK_RESPONSE}},
        },
        "400": _error("The body is not a feedback document."),
        "401": _error("A bearer token is configured for /feedback and was not given."),
        "404": _error("Feedback is not enabled."),
        "413": _error("More feedback items than `feedback.max_items`."),
    },
}
_ADMIN: dict[str, dict[str, Any]] = {
    "401": _error("A bearer token is required for /admin and was not given (or is wrong)."),
    "404": _error("/admin is disabled (no admin token configured), or the action's feature is."),
}


def document_api(app: FastAPI, protocol: str) -> None:
    """Document the protocol's inference routes, the feedback body, and the answers the
    framework cannot infer (documented errors of /feedback, /metrics, /readyz, /admin/*).

    Call before the catch-all passthrough route is added: the documented inference routes
    only serve what the fast path would have served (they are reached only if it is bypassed).
    """
    for path, parameters in _PATHS[protocol]:
        app.add_api_route(
            path,
            _inference,
            methods=["POST"],
            tags=["inference"],
            summary=f"Inference ({protocol})",
            description="Validated and monitored, then forwarded to the model server unchanged.",
            operation_id=f"infer_{protocol}" + ("_version" if "{version}" in path else ""),
            response_model=None,
            responses=inference_responses(protocol),
            openapi_extra={
                "parameters": parameters,
                "requestBody": {"required": True, "content": _REQUESTS[protocol]},
            },
        )
    for route in app.router.routes:
        if (
            isinstance(route, APIRoute)
            and route.path == "/feedback"
            and "POST" in (route.methods or ())
        ):
            route.openapi_extra = {
                **(route.openapi_extra or {}),
                "requestBody": {"required": True, "content": {JSON: {"schema": FEEDBACK_REQUEST}}},
            }
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            add_responses(generate())
        return generate()

    app.openapi = openapi  # type: ignore[method-assign]


def add_responses(doc: dict[str, Any]) -> None:
    """Complete the generated document's answers in place (a route's own entries win, except
    the content type of /metrics, which the framework cannot know)."""
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            extra = dict(_EXTRA_RESPONSES.get((path, method), {}))
            if path.startswith("/admin/"):  # every admin route, including ones added later
                extra = {**_ADMIN, **extra}
                if "requestBody" in operation:
                    extra.setdefault("400", _error("The body is not what the route accepts."))
            responses = operation.setdefault("responses", {})
            for status, answer in extra.items():
                if (path, method, status) == ("/metrics", "get", "200"):
                    responses[status] = answer
                else:
                    responses.setdefault(status, answer)
