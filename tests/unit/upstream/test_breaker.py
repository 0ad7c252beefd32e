"""The circuit breaker's states, and the upstream client failing fast through it."""

from __future__ import annotations

import time

import pytest

from app.config import UpstreamSettings
from app.errors import CircuitOpen, UpstreamUnavailable
from app.upstream.breaker import BreakerState, CircuitBreaker
from app.upstream.client import UpstreamClient, outcome_of
from tests.support.stub_upstream import StubUpstream, free_port


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, changes: list[BreakerState] | None = None) -> CircuitBreaker:
    seen = changes if changes is not None else []
    return CircuitBreaker(3, 5.0, clock=clock, on_change=seen.append)


def test_opens_after_n_failures_in_a_row_only() -> None:
    b = breaker(Clock())
    for _ in range(2):
        assert b.allow()
        b.failed()
    assert b.allow()
    b.succeeded()  # an answer resets the run of failures
    for _ in range(2):
        assert b.allow()
        b.failed()
    assert b.state is BreakerState.CLOSED
    assert b.allow()
    b.failed()
    assert b.state is BreakerState.OPEN
    assert not b.allow()
    assert b.rejected == 1


def test_half_open_lets_one_trial_through_and_its_verdict_decides() -> None:
    clock = Clock()
    changes: list[BreakerState] = []
    b = breaker(clock, changes)
    for _ in range(3):
        b.allow()
        b.failed()
    assert b.retry_after() == 5.0
    clock.now += 4.9
    assert not b.allow()
    assert b.retry_after() == pytest.approx(0.1)
    clock.now += 0.2
    assert b.allow()  # the trial
    assert b.state is BreakerState.HALF_OPEN
    assert not b.allow()  # others still fail fast while the trial is out
    b.failed()
    assert b.state is BreakerState.OPEN
    assert b.retry_after() == 5.0  # a failed trial opens it for a full period again
    clock.now += 5.0
    assert b.allow()
    b.succeeded()
    assert b.state is BreakerState.CLOSED
    assert b.allow()
    assert b.allow()
    assert changes == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_an_abandoned_trial_frees_the_slot_without_a_verdict() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.allow()
        b.failed()
    clock.now += 5.0
    assert b.allow()
    b.abandoned()
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()  # a new trial may go


async def test_client_fails_fast_while_open_and_a_probe_closes_it() -> None:
    port = free_port()  # nothing listens here yet
    settings = UpstreamSettings(url=f"http://127.0.0.1:{port}", timeout_seconds=1.0)
    b = CircuitBreaker(2, 60.0)
    client = UpstreamClient(settings, breaker=b)
    await client.start()
    try:
        for _ in range(2):
            with pytest.raises(UpstreamUnavailable) as caught:
                await client.request("POST", "/v2/models/m/infer", [], b"{}")
            assert not isinstance(caught.value, CircuitOpen)
        t0 = time.perf_counter()
        with pytest.raises(CircuitOpen) as caught:
            await client.request("POST", "/v2/models/m/infer", [], b"{}")
        assert time.perf_counter() - t0 < 0.01
        assert outcome_of(caught.value) == "circuit_open"
        assert caught.value.details[0]["circuit"] == "open"
        assert 59 < caught.value.details[0]["retry_after_seconds"] <= 60
        assert not await client.probe("/v2/health/ready")  # down: stays open
        assert b.state is BreakerState.OPEN
        stub = StubUpstream()
        stub.port, stub.url = port, settings.url
        async with stub:
            assert await client.probe("/v2/health/ready")
            assert b.state is BreakerState.CLOSED
            answer = await client.request("POST", "/v2/models/m/infer", [], b'{"inputs": []}')
            assert answer.status == 200
    finally:
        await client.close()
