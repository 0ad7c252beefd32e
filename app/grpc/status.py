"""gRPC status codes as the HTTP statuses that metrics and request-log lines use.

The mapping is google.rpc.Code's documented HTTP equivalent: OK → 200; CANCELLED → 499;
INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE → 400; UNAUTHENTICATED → 401;
PERMISSION_DENIED → 403; NOT_FOUND → 404; ALREADY_EXISTS, ABORTED → 409; RESOURCE_EXHAUSTED
→ 429; UNKNOWN, INTERNAL, DATA_LOSS → 500; UNIMPLEMENTED → 501; UNAVAILABLE → 503;
DEADLINE_EXCEEDED → 504. So `status="4xx"` counts the client's faults and `5xx` the server's.
"""

from __future__ import annotations

import grpc

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status equivalent to a gRPC status code (500 for one not in the table)."""
    return HTTP_STATUS.get(code, 500)
