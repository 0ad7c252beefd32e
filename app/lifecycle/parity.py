"""Parity probes (ML Test Score, monitor 3): does serving compute what training computed?

Every interval, each profile's golden rows are sent straight to the model server (never through
the sidecar's own monitoring) and the answers are compared with the outputs the model gave at
training time. A mismatch means a wrong model or wrong preprocessing is deployed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import quote

import structlog
from multidict import CIMultiDict

from app.config import ParitySettings
from app.errors import InferSightError
from app.monitoring.parity_compare import RowMismatch, compare_outputs
from app.monitoring.profile import Profile
from app.protocols.codecs import Codec
from app.protocols.encode import RequestFormat, encode_rows
from app.telemetry.parity_metrics import ParityMetrics
from app.upstream.client import UpstreamClient

log = structlog.get_logger("infersight.parity")

Outcome = Literal["ok", "mismatch", "error"]
REQUEST_ID = "infersight-parity"
MAX_ERROR_CHARS = 300


def infer_path(protocol: str, model: str) -> str:
    """The inference path of `model` on the model server for `protocol`."""
    name = quote(model, safe="")
    if protocol == "v2":
        return f"/v2/models/{name}/infer"
    if protocol == "v1":
        return f"/v1/models/{name}:predict"
    return "/invocations"


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True, slots=True)
class ParityResult:
    """One probe of one model."""

    model: str
    outcome: Outcome
    rows: int
    mismatched_rows: int
    max_abs_difference: float | None
    """None when the probe got no comparable answer (outcome `error`); inf when a number was
    expected but something else came back."""
    tolerance: float
    timestamp: float
    """Unix time the probe finished."""
    duration_seconds: float
    error: str | None = None
    examples: tuple[RowMismatch, ...] = ()
    """The first few mismatched rows."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers become null)."""
        return {
            "model": self.model,
            "outcome": self.outcome,
            "rows": self.rows,
            "mismatched_rows": self.mismatched_rows,
            "max_abs_difference": _json_value(self.max_abs_difference),
            "tolerance": self.tolerance,
            "timestamp": self.timestamp,
            "duration_seconds": self.duration_seconds,
            "error": self.error,
            "examples": [
                {
                    "row": e.row,
                    "expected": _json_value(e.expected),
                    "actual": _json_value(e.actual),
                    "difference": _json_value(e.difference),
                }
                for e in self.examples
            ],
        }


@dataclass(frozen=True, slots=True)
class _Target:
    model: str
    path: str
    body: bytes | None
    encode_error: str | None
    expected: list[Any]
    output_name: str | None
    column: int | None
    tolerance: float


class ParityProber:
    """Replays golden rows to the model server on a schedule and exports the comparison."""

    def __init__(
        self,
        profiles: Mapping[str, Profile],
        settings: ParitySettings,
        protocol: str,
        codec: Codec,
        upstream: UpstreamClient,
        metrics: ParityMetrics,
        *,
        first_delay_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.protocol = protocol
        self.codec = codec
        self.upstream = upstream
        self.metrics = metrics
        self.first_delay_seconds = first_delay_seconds
        self._clock = clock
        self._latest: dict[str, ParityResult] = {}
        fmt: RequestFormat = "matrix" if settings.request_format == "matrix" else "columns"
        self._targets = [
            self._target(name, profile, fmt)
            for name, profile in profiles.items()
            if profile.golden is not None
        ]
        for t in self._targets:
            metrics.prepare(t.model, len(t.expected))

    def _target(self, model: str, profile: Profile, fmt: RequestFormat) -> _Target:
        golden = profile.golden
        assert golden is not None
        prediction = profile.prediction
        output_name = golden.output_name or (prediction.output_name if prediction else None)
        body, error = None, None
        try:
            body = encode_rows(
                self.protocol,
                golden.rows,
                profile.feature_names,
                fmt,
                output_name=output_name,
                request_id=REQUEST_ID,
            )
        except InferSightError as exc:
            error = exc.message
        tolerance = self.settings.tolerance
        return _Target(
            model=model,
            path=infer_path(self.protocol, model),
            body=body,
            encode_error=error,
            expected=list(golden.predictions),
            output_name=output_name,
            column=prediction.column if prediction else None,
            tolerance=golden.tolerance if tolerance is None else tolerance,
        )

    @property
    def models(self) -> list[str]:
        """Models with golden rows (the ones probed)."""
        return [t.model for t in self._targets]

    @property
    def latest(self) -> Mapping[str, ParityResult]:
        """The latest result of each probed model (read-only view)."""
        return MappingProxyType(self._latest)

    def report(self) -> dict[str, Any]:
        """The latest results as a JSON-ready document, by model."""
        return {name: r.as_dict() for name, r in self._latest.items()}

    async def run_once(self) -> dict[str, ParityResult]:
        """Probe every model with golden rows once (one after the other); never raises."""
        results: dict[str, ParityResult] = {}
        for target in self._targets:
            result = await self._probe(target)
            results[target.model] = result
            self._latest[target.model] = result
            self.metrics.observe(
                result.model,
                result.outcome,
                mismatched=result.mismatched_rows,
                max_abs_difference=result.max_abs_difference,
                timestamp=result.timestamp,
            )
            if result.outcome != "ok":
                log.warning(
                    "parity." + result.outcome,
                    model=result.model,
                    mismatched_rows=result.mismatched_rows,
                    rows=result.rows,
                    max_abs_difference=_json_value(result.max_abs_difference),
                    error=result.error,
                )
        return results

    async def run_forever(self) -> None:
        """Probe soon after start, then every interval; returns at once when there is nothing
        to probe or parity is disabled. Cancel the task to stop it."""
        if not self.settings.enabled or not self._targets:
            return
        await asyncio.sleep(self.first_delay_seconds)
        while True:
            with contextlib.suppress(Exception):  # run_once never raises; belt and braces
                await self.run_once()
            await asyncio.sleep(self.settings.interval_seconds)

    async def _probe(self, t: _Target) -> ParityResult:
        started = time.perf_counter()

        def result(outcome: Outcome, **kw: Any) -> ParityResult:
            base: dict[str, Any] = {
                "mismatched_rows": 0, "max_abs_difference": None, "error": None, "examples": (),
            }  # fmt: skip
            base.update(kw)
            return ParityResult(
                model=t.model, outcome=outcome, rows=len(t.expected), tolerance=t.tolerance,
                timestamp=self._clock(), duration_seconds=time.perf_counter() - started, **base,
            )  # fmt: skip

        if t.body is None:
            return result("error", error=t.encode_error)
        headers: CIMultiDict[str] = CIMultiDict(
            {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        )
        headers["x-request-id"] = REQUEST_ID
        try:
            resp = await self.upstream.request("POST", t.path, headers, t.body)
            if not 200 <= resp.status < 300:
                text = resp.body[:MAX_ERROR_CHARS].decode("utf-8", errors="replace")
                return result("error", error=f"model server answered {resp.status}: {text}")
            predictions = self.codec.decode_response(resp.body, t.output_name, t.column)
        except InferSightError as exc:
            return result("error", error=f"{exc.type_name}: {exc.message}"[:MAX_ERROR_CHARS])
        except Exception as exc:  # a bug must not stop the schedule: report it as an error
            return result("error", error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
        cmp = compare_outputs(t.expected, predictions.values, t.tolerance)
        return result(
            "ok" if cmp.ok else "mismatch",
            mismatched_rows=cmp.mismatched,
            max_abs_difference=cmp.max_abs_difference,
            examples=tuple(cmp.examples),
        )
