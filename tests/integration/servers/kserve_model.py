"""A KServe model server for the loan-default scikit-learn pipeline.

Standalone script, run with the Python of ``.venvs/kserve``:

    python tests/integration/servers/kserve_model.py --model_dir DIR --model_name loan \
        --http_port 8080 --grpc_port 8081 [--host 127.0.0.1]

``DIR/model.joblib`` is the pipeline written by ``train.py --format kserve``.  Endpoints are
KServe's own: V1 ``GET /v1/models/{name}`` and ``POST /v1/models/{name}:predict`` with
``{"instances": [...]}`` (each instance a dict of feature -> value, i.e. a DataFrame row, or a
list of values in the training column order) answering ``{"predictions": [0, 1, ...]}``; and V2
``POST /v2/models/{name}/infer`` (one input tensor per feature column) answering an output
named ``predict``.  ``--grpc_port 0`` disables gRPC.

KServe hard-codes ``0.0.0.0`` (HTTP) and ``[::]`` (gRPC); this script rebinds both to
``--host`` (loopback by default).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from typing import Any

FEATURES = [
    "age",
    "monthly_income",
    "marital_status",
    "employment",
    "loan_amount",
    "has_mortgage",
    "purpose",
]

log = logging.getLogger("loan-kserve")


def _own_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    return parser.parse_known_args(argv)


def _bind_to(host: str) -> None:
    """Make KServe's REST (uvicorn) and gRPC servers listen on `host` only."""
    import uvicorn

    original_config = uvicorn.Config

    class HostConfig(original_config):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["host"] = host
            super().__init__(*args, **kwargs)

    import kserve.protocol.rest.server as rest_server

    rest_server.uvicorn.Config = HostConfig  # the module looks it up at call time

    import kserve.protocol.grpc.server as grpc_server

    real_aio = grpc_server.aio

    class _Aio:
        """Stands in for grpc.aio in KServe's gRPC module: rewrites "[::]:PORT"."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real_aio, name)

        @staticmethod
        def server(*args: Any, **kwargs: Any) -> Any:
            server = real_aio.server(*args, **kwargs)
            add_port = server.add_insecure_port

            def add_insecure_port(address: str) -> int:
                _, _, port = address.rpartition(":")
                return add_port(f"{host}:{port}")

            server.add_insecure_port = add_insecure_port
            return server

    grpc_server.aio = _Aio()


def _to_frame(instances: Any) -> Any:
    """V1 instances (dict rows or value lists) -> DataFrame with the training columns."""
    import pandas as pd
    from kserve.errors import InvalidInput

    if not isinstance(instances, list) or not instances:
        raise InvalidInput('"instances" must be a non-empty list')
    if all(isinstance(row, dict) for row in instances):
        frame = pd.DataFrame.from_records(instances)
    elif all(isinstance(row, list | tuple) for row in instances):
        width = {len(row) for row in instances}
        if width - {len(FEATURES), len(FEATURES) - 1}:
            raise InvalidInput(
                f"list instances need {len(FEATURES)} values in this order: {FEATURES}"
            )
        frame = pd.DataFrame([list(row) for row in instances]).iloc[:, : len(FEATURES)]
        frame.columns = FEATURES[: frame.shape[1]]
    else:
        raise InvalidInput("instances must all be objects (feature -> value) or all lists")
    return _normalise(frame)


def _normalise(frame: Any) -> Any:
    import numpy as np
    from kserve.errors import InvalidInput

    missing = [c for c in FEATURES if c != "purpose" and c not in frame.columns]
    if missing:
        raise InvalidInput(f"missing feature(s): {missing}")
    frame = frame.copy()
    if "purpose" not in frame.columns:
        frame["purpose"] = ""
    for col in ("age", "monthly_income", "loan_amount"):
        frame[col] = frame[col].astype("float64")
    for col in ("marital_status", "employment", "purpose"):
        frame[col] = (
            frame[col]
            .map(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v)
            .astype(object)
        )
    frame["has_mortgage"] = np.asarray(frame["has_mortgage"], dtype="float64")
    return frame[FEATURES]


def build_model_class() -> type:
    import joblib
    import kserve
    import numpy as np
    from kserve import InferOutput, InferRequest, InferResponse
    from kserve.errors import InferenceError

    class LoanModel(kserve.Model):  # type: ignore[misc]
        """Loads model.joblib; predicts default (0/1) for V1 and V2 requests."""

        def __init__(self, name: str, model_dir: str) -> None:
            super().__init__(name)
            self.model_dir = model_dir
            self.model: Any = None
            self.ready = False

        def load(self) -> bool:
            self.model = joblib.load(os.path.join(self.model_dir, "model.joblib"))
            self.ready = True
            return self.ready

        def _predict(self, frame: Any) -> Any:
            try:
                return np.asarray(self.model.predict(frame)).astype("int64")
            except Exception as exc:  # report it as KServe's 500 with the reason
                raise InferenceError(f"{type(exc).__name__}: {exc}") from exc

        def predict(
            self, payload: Any, headers: dict[str, str] | None = None
        ) -> dict[str, Any] | InferResponse:
            if isinstance(payload, InferRequest):
                frame = _normalise(payload.as_dataframe())
                predictions = self._predict(frame)
                output = InferOutput(name="predict", shape=[len(predictions)], datatype="INT64")
                output.set_data_from_numpy(predictions, binary_data=False)
                return InferResponse(  # binary when the request asks (tritonclient's default)
                    response_id=payload.id or str(uuid.uuid4()),
                    model_name=self.name,
                    infer_outputs=[output],
                    use_binary_outputs=payload.use_binary_outputs,
                    requested_outputs=payload.request_outputs,
                )
            instances = payload.get("instances", payload.get("inputs"))
            predictions = self._predict(_to_frame(instances))
            return {"predictions": predictions.tolist()}

    return LoanModel


def main(argv: list[str] | None = None) -> int:
    own, rest = _own_args(sys.argv[1:] if argv is None else argv)
    # kserve.model_server parses sys.argv at import time (parse_known_args).
    sys.argv = [sys.argv[0], *rest]
    grpc_disabled = "--grpc_port" in rest and rest[rest.index("--grpc_port") + 1] == "0"
    if grpc_disabled:
        sys.argv += ["--enable_grpc", "false"]
    _bind_to(own.host)

    import kserve
    from kserve.model_server import args as server_args

    loan_model = build_model_class()(server_args.model_name, own.model_dir)
    loan_model.load()
    kserve.ModelServer().start([loan_model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
