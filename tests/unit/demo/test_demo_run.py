"""The demo's lifecycle scenarios end to end, started as `infersight demo` starts them: the demo
model server and the shadow candidate's server on loopback, the sidecar as a subprocess with the
demo's settings, and `play` with the baseline and then the buggy release, delayed labels
included. Every wait is bounded; the assertions are on what the sidecar itself counted."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from rich.console import Console

from app.config import load_settings
from app.demo.dashboard import Snapshot, parse_metrics, totals
from app.demo.feedback import FeedbackConfig
from app.demo.model import BUGGY_VERSION, GOOD_VERSION, train_candidate
from app.demo.model_server import BackgroundServer
from app.demo.runner import (
    ACCURACY_BOUND,
    DEMO_LIFECYCLE,
    GOLDEN_ROWS,
    DemoRun,
    Sidecar,
    free_port,
    play,
    prepare,
    sidecar_command,
    start_model_server,
    start_shadow_server,
    start_sidecar,
    wait_ready,
)
from app.demo.scenarios import Scenario, by_name

STEP_SECONDS = 2.5
WAIT_SECONDS = 30.0
"""Upper bound of every wait for the sidecar (readiness, a parity probe)."""
STEPS = ("baseline", "buggy_model")


@dataclass
class Stack:
    sidecar: Sidecar
    model: BackgroundServer
    shadow: BackgroundServer
    console_out: io.StringIO
    console: Console
    seen: dict[str, Snapshot] = field(default_factory=dict)
    """The sidecar's metrics at the end of each scenario (before its result is recorded)."""
    parity_at_buggy: dict[str, Any] = field(default_factory=dict)


async def get(url: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as http,
        http.get(url) as resp,
    ):
        return resp.status, await resp.read()


async def scrape(sidecar: Sidecar) -> Snapshot:
    status, body = await get(f"{sidecar.url}/metrics")
    assert status == 200
    return parse_metrics(body.decode())


async def wait_for(sidecar: Sidecar, what: str, predicate: Callable[[Snapshot], bool]) -> Snapshot:
    """Scrape until `predicate` holds, at most WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        snap = await scrape(sidecar)
        if predicate(snap):
            return snap
        if time.monotonic() > deadline or sidecar.process.poll() is not None:
            pytest.fail(f"{what}: not seen within {WAIT_SECONDS:.0f} s\n{sidecar.stderr_tail()}")
        await asyncio.sleep(0.2)


def total(snap: Snapshot, name: str, **labels: str) -> float:
    """Sum of `name` over the series whose labels match `labels`."""
    by = tuple(labels)
    want = tuple(labels.values())
    return sum(v for k, v in totals(snap, name, by).items() if k == want)


def probes(snap: Snapshot, outcome: str) -> float:
    return total(snap, "infersight_parity_probes_total", outcome=outcome)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("demo-run")
    out = io.StringIO()
    console = Console(file=out, width=140)
    artifacts = prepare(workdir, 0, console, golden_rows=GOLDEN_ROWS)
    model = start_model_server(artifacts, 0, console)
    shadow = start_shadow_server(train_candidate(0), 0, console)
    sidecar = start_sidecar(
        model.url,
        artifacts,
        free_port(),
        console,
        shadow_url=shadow.url,
        settings={"INFERSIGHT_PARITY__INTERVAL_SECONDS": "0.5"},
    )
    try:
        yield Stack(sidecar, model, shadow, out, console)
    finally:
        sidecar.stop()
        shadow.stop()
        model.stop()


@pytest.fixture(scope="module")
def run(stack: Stack) -> DemoRun:
    """Play baseline then buggy_model through the sidecar, with labels 0.2-0.5 s late."""
    return asyncio.run(play_lifecycle(stack))


async def play_lifecycle(stack: Stack) -> DemoRun:
    sidecar = stack.sidecar
    assert await wait_ready(sidecar, WAIT_SECONDS), sidecar.stderr_tail()
    # v1 is served: a parity probe replays the golden rows and they match.
    stack.seen["start"] = await wait_for(sidecar, "a parity probe", lambda s: probes(s, "ok") >= 1)

    async def after_step(scenario: Scenario) -> None:
        if scenario.name == "buggy_model":
            # v2-buggy is still served: wait for a probe that sees it.
            await wait_for(sidecar, "a parity mismatch", lambda s: probes(s, "mismatch") >= 1)
            _, body = await get(f"{sidecar.url}/monitoring/lifecycle")
            stack.parity_at_buggy = orjson.loads(body)["parity"]["loan"]
        stack.seen[scenario.name] = await scrape(sidecar)

    return await play(
        sidecar.url,
        stack.model.url,
        f"{sidecar.url}/metrics",
        0.0,
        stack.console,
        seed=0,
        sidecar=sidecar,
        steps=[(by_name(name), STEP_SECONDS) for name in STEPS],
        feedback=FeedbackConfig(url=sidecar.url, delay_seconds=(0.2, 0.5), every_seconds=0.5),
        after_step=after_step,
    )


def after(stack: Stack, step: str, name: str, **labels: str) -> float:
    return total(stack.seen[step], name, **labels)


async def test_the_buggy_release_is_one_version_change(stack: Stack, run: DemoRun) -> None:
    changes = "infersight_model_version_changes_total"
    assert after(stack, "start", changes) == 0
    assert after(stack, "baseline", changes) == 0
    assert after(stack, "buggy_model", changes) == 1
    assert total(await scrape(stack.sidecar), changes) == 1
    _, body = await get(f"{stack.sidecar.url}/monitoring/lifecycle")
    loan = orjson.loads(body)["versions"]["loan"]
    assert (loan["version"], loan["profile_version"], loan["changes"]) == (
        BUGGY_VERSION,
        GOOD_VERSION,
        1,
    )
    assert [(r.scenario.name, r.version) for r in run.results] == [
        ("baseline", GOOD_VERSION),
        ("buggy_model", BUGGY_VERSION),
    ]


async def test_predictions_shift_to_class_one(stack: Stack, run: DemoRun) -> None:
    bins = "infersight_prediction_bin_total"

    def ones_share(before: str, end: str) -> float:
        ones = after(stack, end, bins, bin="1") - after(stack, before, bins, bin="1")
        rows = sum(totals(stack.seen[end], bins).values()) - sum(
            totals(stack.seen[before], bins).values()
        )
        return ones / rows

    good, buggy = ones_share("start", "baseline"), ones_share("baseline", "buggy_model")
    assert good < 0.5 < buggy
    shifted = run.results[1].seen
    assert shifted is not None
    assert shifted.shifts[0].column == "predict (prediction)"
    assert shifted.shifts[0].bin == "1"


async def test_parity_probes_match_v1_and_catch_the_buggy_version(
    stack: Stack, run: DemoRun
) -> None:
    assert probes(stack.seen["start"], "ok") >= 1
    assert probes(stack.seen["start"], "mismatch") == 0
    assert probes(stack.seen["start"], "error") == 0
    # While v1 served the baseline, every probe matched.
    assert probes(stack.seen["baseline"], "ok") >= probes(stack.seen["start"], "ok")
    assert probes(stack.seen["baseline"], "mismatch") == 0
    # Every golden row's class is inverted by v2-buggy.
    assert stack.parity_at_buggy["outcome"] == "mismatch"
    assert stack.parity_at_buggy["mismatched_rows"] == stack.parity_at_buggy["rows"] == GOLDEN_ROWS


async def test_delayed_feedback_is_matched_and_unknown_ids_are_counted(
    stack: Stack, run: DemoRun
) -> None:
    fb = run.feedback
    snap = await scrape(stack.sidecar)
    outcome = "infersight_feedback_total"
    assert fb.pending == 0
    assert not fb.errors
    assert fb.unknown_sent == fb.posts > 0
    assert total(snap, outcome, outcome="unknown") == fb.unknown_sent
    matched = total(snap, outcome, outcome="matched")
    assert matched == fb.sent - fb.unknown_sent > 0
    assert total(snap, outcome, outcome="invalid") == total(snap, outcome, outcome="duplicate") == 0
    assert fb.outcomes["matched"] == matched
    assert fb.outcomes["unknown"] == fb.unknown_sent


async def test_feedback_shows_the_buggy_version_is_worse(stack: Stack, run: DemoRun) -> None:
    fb = run.feedback
    snap = await scrape(stack.sidecar)
    good, buggy = fb.by_version[GOOD_VERSION], fb.by_version[BUGGY_VERSION]
    assert set(fb.by_version) == {GOOD_VERSION, BUGGY_VERSION}
    assert good.attributed
    assert buggy.attributed
    assert good.scored > 0
    assert buggy.scored > 0
    assert good.accuracy is not None
    assert buggy.accuracy is not None
    assert buggy.accuracy < ACCURACY_BOUND < good.accuracy
    # The tallies split the sidecar's own counters: nothing scored is left out.
    assert good.scored + buggy.scored == total(snap, "infersight_feedback_scored_total")
    assert good.correct + buggy.correct == total(snap, "infersight_feedback_correct_total")
    assert good.scored == good.matched
    baseline, buggy_period = fb.by_scenario["baseline"], fb.by_scenario["buggy_model"]
    assert baseline.accuracy is not None
    assert buggy_period.accuracy is not None
    assert buggy_period.accuracy < baseline.accuracy
    assert total(snap, "infersight_model_quality_threshold", metric="accuracy") == ACCURACY_BOUND


async def test_the_shadow_gets_mirrored_requests(stack: Stack, run: DemoRun) -> None:
    comparisons = "infersight_shadow_comparisons_total"
    snap = await scrape(stack.sidecar)
    assert total(snap, comparisons) > 0
    assert total(snap, "infersight_shadow_requests_total", outcome="ok") > 0
    assert total(snap, "infersight_shadow_errors_total") == 0

    def agreement(before: str, end: str) -> float:
        agree = after(stack, end, comparisons, result="agree") - after(
            stack, before, comparisons, result="agree"
        )
        rows = after(stack, end, comparisons) - after(stack, before, comparisons)
        return agree / rows

    # The candidate agrees with v1 on most rows and with the inverted v2-buggy on few.
    assert agreement("start", "baseline") > 0.5 > agreement("baseline", "buggy_model")


async def test_ml_test_score_monitors_are_automated(stack: Stack, run: DemoRun) -> None:
    status, body = await get(f"{stack.sidecar.url}/monitoring/ml-test-score")
    assert status == 200
    doc = orjson.loads(body)
    monitors = {m["monitor"]: m for m in doc["monitors"]}
    assert sorted(monitors) == [1, 2, 3, 4, 5, 6, 7]
    assert all(m["automated"] for m in monitors.values())
    assert (doc["automated"], doc["score"], doc["max_score"]) == (7, 7.0, 7)
    assert monitors[1]["state"] == "alerting"  # the version change
    assert monitors[1]["evidence"]["models"]["loan"]["changes"] == 1


async def test_the_dashboard_shows_the_lifecycle_panels(stack: Stack, run: DemoRun) -> None:
    assert run.final is not None
    out = io.StringIO()
    Console(file=out, width=140).print(run.final)
    text = out.getvalue()
    for expected in (
        "model version",
        BUGGY_VERSION,
        "ground truth",
        f"served by {BUGGY_VERSION}",
        "shadow agrees",
        "parity",
        "ML Test Score: 7/7 automated",
        "train/serve parity",
    ):
        assert expected in text, expected


def test_the_demo_sidecar_settings_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in DEMO_LIFECYCLE.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.feedback.enabled
    assert settings.feedback.store == "sqlite::memory:"
    assert settings.feedback.thresholds == {"accuracy": ACCURACY_BOUND}
    assert settings.parity.enabled
    assert settings.parity.interval_seconds == 5
    command = sidecar_command("http://u", Path("p.json"), 1, "http://127.0.0.1:9")
    assert command[-2:] == ["--shadow-upstream", "http://127.0.0.1:9"]
    assert "--shadow-upstream" not in sidecar_command("http://u", Path("p.json"), 1)
