"""A shadow model never affects the primary: the sidecar (uvicorn) in front of the demo V2 model
server, with a slow, a failing and an absent shadow, all on loopback.

Expects the wiring: with `shadow.url` set, the sidecar offers every successful monitored request
to `ShadowMirror.offer(...)` after the primary has answered, and `/metrics` exposes
`infersight_shadow_*`.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
from rich.console import Console

from app.config import DriftSettings, FeedbackSettings, Settings, ShadowSettings, UpstreamSettings
from app.demo.data import FEATURES, generate, rows
from app.demo.model_server import BackgroundServer, demo_state, serve
from app.demo.runner import Artifacts, prepare
from app.demo.traffic import encode_request
from app.monitoring.profile import Profile, load_profile
from app.telemetry.shadow_metrics import SHADOW_OUTCOMES
from tests.support.sidecar import RunningSidecar, parse_metrics, run_sidecar
from tests.support.stub_upstream import StubUpstream, free_port

pytestmark = pytest.mark.integration

SHADOW_DELAY_MS = 1500
N_REQUESTS = 40
PATH = "/v2/models/loan/infer"
SHADOW_METRICS = (
    "infersight_shadow_requests_total",
    "infersight_shadow_errors_total",
    "infersight_shadow_dropped_total",
    "infersight_shadow_duration_seconds_count",
    "infersight_shadow_comparisons_total",
    "infersight_shadow_abs_difference_count",
)


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    seconds: float


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """The demo model trained and profiled as `infersight demo` does."""
    workdir: Path = tmp_path_factory.mktemp("shadow-demo")
    return prepare(workdir, seed=0, console=Console(file=io.StringIO()))


@pytest.fixture(scope="module")
def demo_profile(demo: Artifacts) -> Profile:
    return load_profile(demo.profile)


@pytest.fixture(scope="module")
def primary(demo: Artifacts) -> Iterator[BackgroundServer]:
    server = serve(demo_state(demo.pipeline))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def slow_shadow(demo: Artifacts) -> Iterator[BackgroundServer]:
    """The same model on its own server, answering after SHADOW_DELAY_MS."""
    state = demo_state(demo.pipeline)
    state.control({"delay_ms": SHADOW_DELAY_MS})
    server = serve(state)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bodies() -> list[bytes]:
    """Requests of 1 to 5 rows, each with its own id (the server echoes it)."""
    batch = rows(generate(N_REQUESTS * 3, seed=31), FEATURES)
    out, start = [], 0
    for i in range(N_REQUESTS):
        size = 1 + i % 5
        out.append(orjson.dumps(encode_request(batch[start : start + size], f"req-{i}")))
        start += size
    return out


def sidecar_settings(upstream: str, shadow: ShadowSettings | None = None) -> Settings:
    return Settings(
        upstream=UpstreamSettings(url=upstream, timeout_seconds=10),
        drift=DriftSettings(enabled=False),
        feedback=FeedbackSettings(enabled=False),
        shadow=shadow or ShadowSettings(),
    )


async def send_all(base_url: str, bodies: list[bytes]) -> list[Answer]:
    """POST every body in turn; each answer with its wall time."""
    out = []
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession() as http:
        for body in bodies:
            t0 = time.perf_counter()
            async with http.post(base_url + PATH, data=body, headers=headers) as r:
                data = await r.read()
                out.append(Answer(r.status, r.content_type, data, time.perf_counter() - t0))
    return out


async def scrape(sc: RunningSidecar) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as http, http.get(sc.url + "/metrics") as r:
        assert r.status == 200
        return parse_metrics(await r.text())


def shadow_value(
    m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return m[(name, tuple(sorted({"model": "loan", **labels}.items())))]


def outcomes(m: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    counts = {
        o: shadow_value(m, "infersight_shadow_requests_total", outcome=o) for o in SHADOW_OUTCOMES
    }
    return {o: n for o, n in counts.items() if n}


async def until(sc: RunningSidecar, done: Callable[[RunningSidecar], bool], seconds: float) -> None:
    """Wait until the mirror's counters satisfy `done`; fail after `seconds`."""
    for _ in range(int(seconds / 0.05)):
        if done(sc):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the shadow mirror did not settle within {seconds} s")


def count(sc: RunningSidecar, name: str, **labels: str) -> float:
    return sc.sample(name, {"model": "loan", **labels}) or 0.0


def summary(label: str, answers: list[Answer]) -> str:
    ms = sorted(a.seconds * 1000 for a in answers)
    p95 = ms[int(0.95 * (len(ms) - 1))]
    return f"{label}: median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, max {ms[-1]:.1f} ms"


def assert_unaffected(direct: list[Answer], via: list[Answer]) -> None:
    assert [a.status for a in via] == [200] * N_REQUESTS
    for d, v in zip(direct, via, strict=True):
        assert v.body == d.body, "the primary's answer through the sidecar differs"
        assert v.content_type == d.content_type


async def test_primary_answers_and_latency_are_unaffected_by_slow_and_failing_shadows(
    demo_profile: Profile,
    primary: BackgroundServer,
    slow_shadow: BackgroundServer,
    bodies: list[bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    profiles = {"loan": demo_profile}
    direct = await send_all(primary.url, bodies)
    assert [a.status for a in direct] == [200] * N_REQUESTS
    report = [summary("direct", direct)]

    async with run_sidecar(sidecar_settings(primary.url), profiles) as sc:
        await send_all(sc.url, bodies[:5])  # warm the connection pool
        plain = await send_all(sc.url, bodies)
    assert_unaffected(direct, plain)
    report.append(summary("sidecar, no shadow", plain))

    # (a) A slow shadow: 2 requests in flight, 2 waiting, the rest dropped; the primary never
    # waits for it.
    slow = ShadowSettings(url=slow_shadow.url, max_concurrency=2, queue_size=2, timeout_seconds=5)
    async with run_sidecar(sidecar_settings(primary.url, slow), profiles) as sc:
        wired = sc.sample("infersight_shadow_dropped_total", {"model": "loan"})
        assert wired == 0, "settings.shadow.url is set but no shadow mirror is wired"
        await send_all(sc.url, bodies[:5])
        with_slow = await send_all(sc.url, bodies)
        limit = SHADOW_DELAY_MS / 1000 / 2
        assert all(a.seconds < limit for a in with_slow), [round(a.seconds, 3) for a in with_slow]
        sent = 5 + N_REQUESTS

        def settled(s: RunningSidecar) -> bool:
            done = count(s, "infersight_shadow_requests_total", outcome="ok")
            return done + count(s, "infersight_shadow_dropped_total") >= sent

        await until(sc, settled, 30)
        m = await scrape(sc)
    assert_unaffected(direct, with_slow)
    report.append(summary(f"sidecar, shadow answering after {SHADOW_DELAY_MS} ms", with_slow))
    assert set(outcomes(m)) == {"ok"}
    mirrored = shadow_value(m, "infersight_shadow_requests_total", outcome="ok")
    assert mirrored >= 1
    assert shadow_value(m, "infersight_shadow_dropped_total") == sent - mirrored > 0
    assert shadow_value(m, "infersight_shadow_errors_total") == 0
    assert shadow_value(m, "infersight_shadow_comparisons_total", result="agree") > 0
    assert shadow_value(m, "infersight_shadow_comparisons_total", result="disagree") == 0
    assert shadow_value(m, "infersight_shadow_duration_seconds_count") == mirrored
    slow_sum = shadow_value(m, "infersight_shadow_duration_seconds_sum")
    assert slow_sum >= mirrored * SHADOW_DELAY_MS / 1000 * 0.9
    assert {name for name, _ in m} >= set(SHADOW_METRICS)

    # (b) A failing shadow (500 on every request) and (c) one that is down.
    async with StubUpstream() as failing:
        failing.state.mode = "error500"
        for label, url, outcome in (
            ("500s", failing.url, "error_status"),
            ("down", f"http://127.0.0.1:{free_port()}", "unavailable"),
        ):
            settings = sidecar_settings(primary.url, ShadowSettings(url=url, timeout_seconds=2))
            async with run_sidecar(settings, profiles) as sc:
                answers = await send_all(sc.url, bodies)
                await until(
                    sc, lambda s: count(s, "infersight_shadow_errors_total") >= N_REQUESTS, 30
                )
                m = await scrape(sc)
            assert_unaffected(direct, answers)
            assert outcomes(m) == {outcome: N_REQUESTS}
            assert shadow_value(m, "infersight_shadow_errors_total") == N_REQUESTS
            assert shadow_value(m, "infersight_shadow_comparisons_total", result="agree") == 0
            report.append(summary(f"sidecar, shadow {label}", answers))
        assert len(failing.state.requests) == N_REQUESTS
        assert [r["body"] for r in failing.state.requests] == bodies
        assert {r["path_qs"] for r in failing.state.requests} == {PATH}

    with capsys.disabled():
        print("\nprimary latency over " + str(N_REQUESTS) + " sequential requests:")
        for line in report:
            print("  " + line)
