"""The codec of each wire protocol behind one interface, chosen by name."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from app.monitoring.batch import Batch, Predictions
from app.protocols import mlflow, v1, v2, v2_binary

JSON_MEDIA_TYPES = frozenset(
    {"application/json", "text/json", "text/plain", "application/octet-stream"}
)
"""Media types decoded as JSON: JSON's own, plus the generic types clients send when nobody set
one (`text/plain` from browsers' fetch, `application/octet-stream` from aiohttp and with
tritonclient's binary tensor bodies). Any `application/*+json` type is JSON too."""


def media_type(content_type: str) -> str:
    """`Type/Sub; charset=…` → `type/sub` (parameters dropped, lower-cased)."""
    return content_type.partition(";")[0].strip().lower()


@dataclass(frozen=True, slots=True)
class BinaryTensors:
    """Decoders for bodies in V2's binary tensor extension: a JSON header whose length the
    `Inference-Header-Content-Length` header gives (the last argument), then raw tensor data."""

    header: str
    """The header's name, lower-cased."""
    decode_request: Callable[[bytes, list[str], str], Batch]
    """(body, profile feature order, header value) → Batch; raises DecodeError."""
    decode_response: Callable[[bytes, str | None, int | None, str], Predictions]
    """(body, output name, output column, header value) → Predictions; raises DecodeError."""
    raw_header: bytes = field(init=False)
    """`header` as the bytes an ASGI or HTTP client header list carries."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "raw_header", self.header.encode("latin-1"))

    def framing(self, raw_headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The header's value among raw (lower-cased) headers, or None when it is not set."""
        name = self.raw_header
        for key, value in raw_headers:
            if key == name:
                return value.decode("latin-1")
        return None


@dataclass(frozen=True, slots=True)
class Codec:
    """Decode requests into columns and responses into predictions for one protocol."""

    name: str
    decode_request: Callable[[bytes, list[str], str], Batch]
    """(body, profile feature order, content type) → Batch; raises DecodeError."""
    decode_response: Callable[[bytes, str | None, int | None], Predictions]
    """(body, output name, output column) → Predictions; raises DecodeError."""
    media_types: frozenset[str] = JSON_MEDIA_TYPES
    """Request media types the codec decodes (besides `application/*+json`)."""
    binary: BinaryTensors | None = None
    """How to decode bodies framed by a binary-extension header (protocols that have one); a
    request or response carrying that header is decoded by it instead."""
    string_errors: bool = False
    """The protocol's clients read errors as `{"error": "<message>"}` (a string, not an object):
    the sidecar's own errors on its routes take that shape, with `type` and `details` beside it."""

    def decode_answer(
        self,
        body: bytes,
        output: str | None,
        column: int | None,
        raw_headers: Iterable[tuple[bytes, bytes]],
    ) -> Predictions:
        """An answer's predictions, read by the binary extension when its headers frame it that
        way (lower-cased raw headers); raises DecodeError."""
        binary = self.binary
        if binary is not None:
            framed = binary.framing(raw_headers)
            if framed is not None:
                return binary.decode_response(body, output, column, framed)
        return self.decode_response(body, output, column)

    def accepts(self, content_type: str) -> bool:
        """Whether a request's Content-Type header ('' when absent) is one this codec decodes."""
        if not content_type or content_type == "application/json":
            return True
        media = media_type(content_type)
        return not media or media in self.media_types or media.endswith("+json")

    def accepted(self) -> list[str]:
        """The accepted media types, for error messages."""
        return ["application/json", *sorted(self.media_types - {"application/json"})]


CODECS: dict[str, Codec] = {
    "v2": Codec(
        "v2",
        lambda b, o, _ct: v2.decode_request(b, o),
        v2.decode_response,
        binary=BinaryTensors(v2_binary.HEADER, v2_binary.decode_request, v2_binary.decode_response),
        string_errors=True,
    ),
    "v1": Codec(
        "v1", lambda b, o, _ct: v1.decode_request(b, o), v1.decode_response, string_errors=True
    ),
    "mlflow": Codec(
        "mlflow",
        mlflow.decode_request,
        mlflow.decode_response,
        JSON_MEDIA_TYPES | {"text/csv"},
    ),
}
