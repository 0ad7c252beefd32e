"""The codec of each wire protocol behind one interface, chosen by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.monitoring.batch import Batch, Predictions
from app.protocols import mlflow, v1, v2


@dataclass(frozen=True, slots=True)
class Codec:
    """Decode requests into columns and responses into predictions for one protocol."""

    name: str
    decode_request: Callable[[bytes, list[str], str], Batch]
    """(body, profile feature order, content type) → Batch; raises DecodeError."""
    decode_response: Callable[[bytes, str | None, int | None], Predictions]
    """(body, output name, output column) → Predictions; raises DecodeError."""


CODECS: dict[str, Codec] = {
    "v2": Codec("v2", lambda b, o, _ct: v2.decode_request(b, o), v2.decode_response),
    "v1": Codec("v1", lambda b, o, _ct: v1.decode_request(b, o), v1.decode_response),
    "mlflow": Codec("mlflow", mlflow.decode_request, mlflow.decode_response),
}
