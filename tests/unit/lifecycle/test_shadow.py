"""The shadow mirror against real loopback servers: sampling, queueing, failures, comparisons."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from app.config import ShadowSettings
from app.lifecycle.shadow import FAILED, ShadowMirror, create_shadow
from app.monitoring.batch import Predictions
from app.monitoring.profile import Profile
from app.monitoring.shadow_compare import CompareMode, ComparisonSpec
from app.protocols.codecs import CODECS, Codec
from app.telemetry.shadow_metrics import COMPARISON_RESULTS, SHADOW_OUTCOMES, ShadowMetrics
from tests.support.stub_upstream import StubUpstream, free_port

MODEL = "loan"
PATH = "/v2/models/loan/infer"


class HangingServer:
    """A loopback TCP server that accepts connections and never answers."""

    def __init__(self) -> None:
        self.connections = 0
        self.closed = 0
        self.connected = asyncio.Event()
        self._all_closed = asyncio.Event()
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.connected.set()
        await self._release.wait()
        writer.close()
        self.closed += 1
        if self.closed == self.connections:
            self._all_closed.set()

    async def __aenter__(self) -> HangingServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        if self.connections:
            await asyncio.wait_for(self._all_closed.wait(), 10)


def v2_body(n: int) -> bytes:
    tensor = {"name": "age", "shape": [n], "datatype": "INT64", "data": [40] * n}
    return json.dumps({"inputs": [tensor]}).encode()


def make_mirror(
    url: str,
    registry: CollectorRegistry,
    mode: CompareMode = "numbers",
    codec: Codec = CODECS["v2"],
    rng: random.Random | None = None,
    **settings: Any,
) -> ShadowMirror:
    specs = {MODEL: ComparisonSpec("predict", None, mode)}
    metrics = ShadowMetrics(registry, specs)
    return ShadowMirror(ShadowSettings(url=url, **settings), codec, specs, metrics, rng=rng)


@asynccontextmanager
async def started(mirror: ShadowMirror) -> AsyncIterator[ShadowMirror]:
    await mirror.start()
    try:
        yield mirror
    finally:
        await asyncio.wait_for(mirror.stop(), 5)


async def settle(mirror: ShadowMirror) -> None:
    await asyncio.wait_for(mirror.drain(), 10)


def offer(
    mirror: ShadowMirror,
    values: Sequence[Any],
    n_rows: int | None = None,
    model: str = MODEL,
    path: str = PATH,
    headers: CIMultiDict[str] | None = None,
) -> None:
    body = v2_body(len(values) if n_rows is None else n_rows)
    primary = Predictions(values=list(values), output_name="predict")
    mirror.offer(model, "POST", path, headers or CIMultiDict(), body, primary)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, {"model": MODEL, **labels})
    assert got is not None, f"{name} {labels} is not exported"
    return got


def requests(registry: CollectorRegistry) -> dict[str, float]:
    """Non-zero request counts by outcome."""
    counts = {
        o: value(registry, "infersight_shadow_requests_total", outcome=o) for o in SHADOW_OUTCOMES
    }
    return {o: n for o, n in counts.items() if n}


def comparisons(registry: CollectorRegistry) -> tuple[float, float]:
    return (
        value(registry, "infersight_shadow_comparisons_total", result="agree"),
        value(registry, "infersight_shadow_comparisons_total", result="disagree"),
    )


def test_every_series_exists_at_zero_from_construction() -> None:
    registry = CollectorRegistry()
    ShadowMetrics(registry, ["loan", "churn"])
    for model in ("loan", "churn"):
        labels = {"model": model}
        for o in SHADOW_OUTCOMES:
            assert (
                registry.get_sample_value(
                    "infersight_shadow_requests_total", {**labels, "outcome": o}
                )
                == 0
            )
        for r in COMPARISON_RESULTS:
            assert (
                registry.get_sample_value(
                    "infersight_shadow_comparisons_total", {**labels, "result": r}
                )
                == 0
            )
        for name in ("infersight_shadow_errors_total", "infersight_shadow_dropped_total"):
            assert registry.get_sample_value(name, labels) == 0
        for name in ("infersight_shadow_duration_seconds", "infersight_shadow_abs_difference"):
            assert registry.get_sample_value(f"{name}_count", labels) == 0
        assert (
            registry.get_sample_value(
                "infersight_shadow_abs_difference_bucket", {**labels, "le": "1e-06"}
            )
            == 0
        )
        assert (
            registry.get_sample_value(
                "infersight_shadow_duration_seconds_bucket", {**labels, "le": "30.0"}
            )
            == 0
        )


async def test_agreement_is_counted_per_row_and_the_request_is_sent_unchanged() -> None:
    registry = CollectorRegistry()
    async with StubUpstream() as shadow:
        shadow.state.prediction = 0.5
        async with started(make_mirror(shadow.url, registry, tolerance=0.1)) as mirror:
            headers = CIMultiDict({"x-request-id": "r-1", "content-type": "application/json"})
            path = "/v2/models/loan/infer?tag=a%2Fb"
            offer(mirror, [0.5, 0.55, 0.9], path=path, headers=headers)
            await settle(mirror)
            assert headers.get("accept-encoding") is None  # the caller's headers are untouched
        sent = shadow.state.requests
        assert len(sent) == 1
        assert sent[0]["path_qs"] == path
        assert sent[0]["body"] == v2_body(3)
        assert sent[0]["headers"]["x-request-id"] == "r-1"
        assert sent[0]["headers"]["accept-encoding"] == "identity"
    assert requests(registry) == {"ok": 1}
    assert comparisons(registry) == (2, 1)
    assert value(registry, "infersight_shadow_errors_total") == 0
    assert value(registry, "infersight_shadow_duration_seconds_count") == 1
    assert value(registry, "infersight_shadow_abs_difference_count") == 3
    assert value(registry, "infersight_shadow_abs_difference_sum") == pytest.approx(0.45)
    assert value(registry, "infersight_shadow_abs_difference_bucket", le="1e-06") == 1


async def test_classes_and_probabilities_compare_by_mode() -> None:
    registry = CollectorRegistry()
    async with StubUpstream() as shadow:
        shadow.state.prediction = 0.7
        async with started(make_mirror(shadow.url, registry, mode="threshold")) as mirror:
            offer(mirror, [0.6, 0.2, 0.99, 0.5])
            await settle(mirror)
    assert comparisons(registry) == (3, 1)
    assert value(registry, "infersight_shadow_abs_difference_count") == 4

    registry = CollectorRegistry()
    async with StubUpstream() as shadow:
        shadow.state.prediction = 1
        async with started(make_mirror(shadow.url, registry, mode="classes")) as mirror:
            offer(mirror, [1, 0, 1.0, "1"])
            await settle(mirror)
    assert comparisons(registry) == (3, 1)
    assert value(registry, "infersight_shadow_abs_difference_count") == 0


async def test_sampling_zero_mirrors_nothing() -> None:
    registry = CollectorRegistry()
    async with StubUpstream() as shadow:
        async with started(make_mirror(shadow.url, registry, sample_rate=0.0)) as mirror:
            for _ in range(50):
                offer(mirror, [0.5])
            await settle(mirror)
        assert shadow.state.requests == []
    assert requests(registry) == {}
    assert value(registry, "infersight_shadow_dropped_total") == 0


async def test_sampling_follows_the_random_source() -> None:
    registry = CollectorRegistry()
    expected_rng = random.Random(7)
    expected = sum(expected_rng.random() < 0.3 for _ in range(200))
    async with StubUpstream() as shadow:
        mirror = make_mirror(
            shadow.url, registry, rng=random.Random(7), sample_rate=0.3, queue_size=1000
        )
        async with started(mirror):
            for _ in range(200):
                offer(mirror, [0.5])
            await settle(mirror)
        assert len(shadow.state.requests) == expected
    assert 30 < expected < 90
    assert requests(registry) == {"ok": expected}


async def test_unknown_models_and_offers_outside_start_stop_are_ignored() -> None:
    registry = CollectorRegistry()
    async with StubUpstream() as shadow:
        mirror = make_mirror(shadow.url, registry)
        offer(mirror, [0.5])  # not started yet
        async with started(mirror):
            offer(mirror, [0.5], model="__other__")
            offer(mirror, [0.5], model="churn")
            await settle(mirror)
        offer(mirror, [0.5])  # stopped
        await settle(mirror)
        assert shadow.state.requests == []
    assert requests(registry) == {}


async def test_a_full_queue_drops_and_counts_and_stop_does_not_wait_for_a_hanging_shadow() -> None:
    registry = CollectorRegistry()
    async with HangingServer() as shadow:
        mirror = make_mirror(
            shadow.url, registry, max_concurrency=1, queue_size=2, timeout_seconds=60
        )
        async with started(mirror):
            offer(mirror, [0.5])
            await asyncio.wait_for(shadow.connected.wait(), 10)  # the one worker is now stuck
            for _ in range(5):
                offer(mirror, [0.5])
            assert value(registry, "infersight_shadow_dropped_total") == 3
            # `started` bounds stop() at 5 s while the shadow would hang for 60 s.
        assert requests(registry) == {}  # abandoned requests have no outcome
    assert value(registry, "infersight_shadow_errors_total") == 0


@pytest.mark.parametrize(
    ("mode", "outcome"),
    [("error500", "error_status"), ("garbage", "bad_response"), ("bad_shape", "bad_response"),
     ("drop", "unavailable")],
)  # fmt: skip
async def test_a_failing_shadow_counts_an_error_by_outcome(mode: str, outcome: str) -> None:
    registry = CollectorRegistry()
    async with StubUpstream() as shadow:
        shadow.state.mode = mode
        async with started(make_mirror(shadow.url, registry)) as mirror:
            offer(mirror, [0.5, 0.5])
            offer(mirror, [0.5])
            await settle(mirror)
    assert requests(registry) == {outcome: 2}
    assert value(registry, "infersight_shadow_errors_total") == 2
    assert comparisons(registry) == (0, 0)
    answered = outcome in ("error_status", "bad_response")
    assert value(registry, "infersight_shadow_duration_seconds_count") == (2 if answered else 0)


async def test_a_shadow_that_is_down_counts_unavailable() -> None:
    registry = CollectorRegistry()
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with started(make_mirror(url, registry)) as mirror:
        offer(mirror, [0.5])
        await settle(mirror)
    assert requests(registry) == {"unavailable": 1}
    assert value(registry, "infersight_shadow_errors_total") == 1


async def test_a_shadow_slower_than_its_timeout_counts_timeout() -> None:
    registry = CollectorRegistry()
    async with HangingServer() as shadow:
        async with started(make_mirror(shadow.url, registry, timeout_seconds=0.2)) as mirror:
            offer(mirror, [0.5])
            offer(mirror, [0.5])
            await settle(mirror)
    assert requests(registry) == {"timeout": 2}
    assert value(registry, "infersight_shadow_errors_total") == 2


async def test_rows_that_do_not_line_up_are_errors_not_comparisons() -> None:
    registry = CollectorRegistry()
    async with StubUpstream() as shadow:
        shadow.state.prediction = 0.5
        async with started(make_mirror(shadow.url, registry)) as mirror:
            offer(mirror, [0.5, 0.5, 0.5], n_rows=2)  # the shadow answers 2 rows, primary 3
            offer(mirror, [0.5, None, 0.4])  # one row without a primary value
            await settle(mirror)
    assert requests(registry) == {"ok": 2}
    assert value(registry, "infersight_shadow_errors_total") == 2
    assert comparisons(registry) == (1, 1)


async def test_a_large_answer_is_compared_off_the_event_loop() -> None:
    registry = CollectorRegistry()
    n = 20_000  # an answer of about 80 kB, over the inline limit
    async with StubUpstream() as shadow:
        shadow.state.prediction = 0.25
        async with started(make_mirror(shadow.url, registry)) as mirror:
            offer(mirror, [0.25] * (n - 1) + [0.5])
            await settle(mirror)
    assert comparisons(registry) == (n - 1, 1)
    assert value(registry, "infersight_shadow_abs_difference_count") == n


async def test_a_worker_survives_an_unexpected_error_and_logs_one_line() -> None:
    calls = 0
    v2 = CODECS["v2"]

    def flaky(body: bytes, output: str | None, column: int | None) -> Predictions:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RuntimeError("codec bug")
        return v2.decode_response(body, output, column)

    registry = CollectorRegistry()
    codec = Codec("v2", v2.decode_request, flaky)
    async with StubUpstream() as shadow:
        shadow.state.prediction = 0.5
        mirror = make_mirror(shadow.url, registry, codec=codec, max_concurrency=1)
        with capture_logs() as logs:
            async with started(mirror):
                for _ in range(4):
                    offer(mirror, [0.5])
                await settle(mirror)
    assert value(registry, "infersight_shadow_errors_total") == 3
    assert comparisons(registry) == (1, 0)
    warnings = [e for e in logs if e["event"] == FAILED]
    assert len(warnings) == 1  # rate-limited: the later failures are only counted
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["model"] == MODEL
    assert "codec bug" in warnings[0]["error"]


async def test_create_shadow_is_none_without_a_url(profile: Profile) -> None:
    registry = CollectorRegistry()
    assert create_shadow(ShadowSettings(), CODECS["v2"], {"loan": profile}, registry) is None
    assert registry.get_sample_value("infersight_shadow_errors_total", {"model": "loan"}) is None


async def test_create_shadow_mirrors_every_profiled_model(profile: Profile) -> None:
    registry = CollectorRegistry()
    settings = ShadowSettings(url="http://127.0.0.1:9")
    profiles = {"loan": profile, "loan-b": profile}
    shadow = create_shadow(settings, CODECS["v2"], profiles, registry)
    assert isinstance(shadow, ShadowMirror)
    for name in profiles:
        assert registry.get_sample_value("infersight_shadow_errors_total", {"model": name}) == 0
