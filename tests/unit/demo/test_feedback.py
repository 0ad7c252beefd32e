"""The demo's delayed ground truth against a stub sidecar on loopback (labels held until due,
grouped by scenario and version, never-served ids added, quality attributed from the sidecar's
counters), and the dashboard's lifecycle panels read from metrics and `/monitoring/*`."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.demo.dashboard import Dashboard, LifecycleView, parse_metrics, summary_table
from app.demo.feedback import (
    UNKNOWN_ID_PREFIX,
    FeedbackConfig,
    FeedbackSender,
    Tally,
    accuracy_text,
    counter_sum,
)
from app.demo.model_server import BackgroundServer
from app.demo.scenarios import by_name
from app.demo.traffic import TrafficStats


@dataclass
class FakeSidecar:
    """`POST /feedback` matching ids that start with "r", and the counters it keeps."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    posts: list[list[dict[str, Any]]] = field(default_factory=list)
    feedback_status: int = 200
    lifecycle: dict[str, Any] | None = None
    score: dict[str, Any] | None = None
    extra: bytes = b""

    def __post_init__(self) -> None:
        reg = self.registry
        self.scored = Counter("infersight_feedback_scored", "", ["model"], registry=reg)
        self.correct = Counter("infersight_feedback_correct", "", ["model"], registry=reg)
        self.outcomes = Counter("infersight_feedback", "", ["model", "outcome"], registry=reg)

    async def feedback(self, request: Request) -> Response:
        if self.feedback_status != 200:
            return Response(b'{"error": "off"}', self.feedback_status)
        items = orjson.loads(await request.body())["feedback"]
        self.posts.append(items)
        counts = dict.fromkeys(("matched", "unknown", "duplicate", "expired", "invalid"), 0)
        for item in items:
            outcome = "matched" if item["request_id"].startswith("r") else "unknown"
            counts[outcome] += 1
            self.outcomes.labels("loan", outcome).inc()
            if outcome == "matched":
                self.scored.labels("loan").inc()
                # The stub "model" always predicted 1: right when the label is 1.
                if item["label"] == 1:
                    self.correct.labels("loan").inc()
        body = {"received": len(items), "outcomes": counts, "details": []}
        return Response(orjson.dumps(body), media_type="application/json")

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry) + self.extra, media_type="text/plain")

    async def lifecycle_doc(self, request: Request) -> Response:
        if self.lifecycle is None:
            return Response(b"", 404)
        return Response(orjson.dumps(self.lifecycle), media_type="application/json")

    async def score_doc(self, request: Request) -> Response:
        if self.score is None:
            return Response(b"", 404)
        return Response(orjson.dumps(self.score), media_type="application/json")


@pytest.fixture
def sidecar() -> Iterator[tuple[FakeSidecar, str]]:
    fake = FakeSidecar()
    app = Starlette(routes=[
        Route("/feedback", fake.feedback, methods=["POST"]),
        Route("/metrics", fake.metrics),
        Route("/monitoring/lifecycle", fake.lifecycle_doc),
        Route("/monitoring/ml-test-score", fake.score_doc),
    ])  # fmt: skip
    with BackgroundServer(app) as server:
        yield fake, server.url


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_labels_wait_until_due_then_go_in_groups_with_never_served_ids(
    sidecar: tuple[FakeSidecar, str],
) -> None:
    fake, url = sidecar
    clock = Clock()
    config = FeedbackConfig(url=url, delay_seconds=(5.0, 5.0), unknown_per_batch=2)
    async with FeedbackSender(config, clock=clock) as sender:
        sender.recorder("baseline")("r1", [1, 0, 1], "v1")
        sender.recorder("buggy_model")("r2", [0, 0], "v2-buggy")
        assert sender.stats.pending == 5
        clock.now += 4.9
        assert await sender.send_due() == 0
        assert fake.posts == []
        clock.now += 0.2
        assert await sender.send_due() == 5 + 2 * 2
    assert sender.stats.pending == 0
    assert [[(i["request_id"], i["row"]) for i in post] for post in fake.posts] == [
        [
            ("r1", 0),
            ("r1", 1),
            ("r1", 2),
            (f"{UNKNOWN_ID_PREFIX}1", 0),
            (f"{UNKNOWN_ID_PREFIX}2", 0),
        ],
        [("r2", 0), ("r2", 1), (f"{UNKNOWN_ID_PREFIX}3", 0), (f"{UNKNOWN_ID_PREFIX}4", 0)],
    ]
    assert [i["label"] for i in fake.posts[0][:3]] == [1, 0, 1]
    stats = sender.stats
    assert (stats.posts, stats.sent, stats.unknown_sent) == (2, 9, 4)
    assert stats.outcomes["matched"] == 5
    assert stats.outcomes["unknown"] == 4
    # Quality as the sidecar scored it, split by version and by scenario.
    assert stats.by_version["v1"] == Tally(sent=3, matched=3, scored=3.0, correct=2.0)
    assert stats.by_version["v2-buggy"] == Tally(sent=2, matched=2, scored=2.0, correct=0.0)
    assert stats.by_scenario["baseline"].accuracy == pytest.approx(2 / 3)
    assert stats.by_scenario["buggy_model"].accuracy == 0.0
    assert accuracy_text(stats.by_version["v1"]) == "0.67 (n=3)"
    assert accuracy_text(None) == accuracy_text(Tally()) == "-"


async def test_flush_sends_what_is_not_due_yet_and_batches_are_capped(
    sidecar: tuple[FakeSidecar, str],
) -> None:
    fake, url = sidecar
    config = FeedbackConfig(url=url, delay_seconds=(60.0, 60.0), max_batch=4, unknown_per_batch=0)
    async with FeedbackSender(config, clock=Clock()) as sender:
        sender.record("r9", list(range(2)) * 5, None, "baseline")
        assert await sender.send_due() == 0
        assert await sender.flush() == 10
        assert await sender.flush() == 0
    assert [len(p) for p in fake.posts] == [4, 4, 2]
    assert set(sender.stats.by_version) == {"?"}  # the answer named no version
    assert sender.stats.by_version["?"].scored == 10


async def test_run_posts_until_stopped(sidecar: tuple[FakeSidecar, str]) -> None:
    import asyncio

    fake, url = sidecar
    config = FeedbackConfig(url=url, delay_seconds=(0.0, 0.0), every_seconds=0.05)
    async with FeedbackSender(config) as sender:
        task = asyncio.create_task(sender.run())
        sender.record("r1", [1], "v1", "baseline")
        for _ in range(100):
            if fake.posts:
                break
            await asyncio.sleep(0.05)
        sender.stop()
        await asyncio.wait_for(task, 5.0)
    assert [i["request_id"] for i in fake.posts[0]] == ["r1", f"{UNKNOWN_ID_PREFIX}1"]


async def test_a_refusing_sidecar_is_counted_not_raised(sidecar: tuple[FakeSidecar, str]) -> None:
    fake, url = sidecar
    fake.feedback_status = 404
    async with FeedbackSender(FeedbackConfig(url=url, delay_seconds=(0.0, 0.0))) as sender:
        sender.record("r1", [1], "v1", "baseline")
        assert await sender.flush() == 0
    assert sender.stats.errors == {"404": 1}
    assert (sender.stats.posts, sender.stats.sent, sender.stats.unknown_sent) == (0, 0, 0)


def test_counter_sum_reads_every_series() -> None:
    text = 'a_total{m="x"} 2\na_total{m="y"} 3\nb_total 1\n'
    assert counter_sum(text, "a_total") == 5
    assert counter_sum(text, "c_total") == 0  # nothing counted yet
    assert counter_sum("not { prometheus", "a_total") is None


LIFECYCLE = {
    "versions": {
        "loan": {
            "version": "v2-buggy",
            "observed": True,
            "profile_version": "v1",
            "profile_mismatch": True,
            "changes": 1,
        }
    },
    "parity": {"loan": {"outcome": "mismatch", "rows": 20, "mismatched_rows": 20}},
    "feedback": {"enabled": True},
    "shadow": {"enabled": True},
}
SCORE = {
    "monitors": [
        {"monitor": 1, "test": "Dependency changes", "automated": True, "state": "alerting"},
        {"monitor": 3, "test": "Parity", "automated": True, "state": "alerting"},
        {"monitor": 7, "test": "Quality", "automated": False, "state": "no_data"},
    ],
    "automated": 2,
    "score": 2.0,
    "max_score": 7,
}


def lifecycle_metrics(agree: int, disagree: int, scored: int, correct: int) -> bytes:
    lines = [
        'infersight_model_info{model="loan",profile_hash="h",version="v2-buggy"} 1',
        'infersight_model_version_changes_total{model="loan"} 1',
        f'infersight_feedback_total{{model="loan",outcome="matched"}} {scored}',
        'infersight_feedback_total{model="loan",outcome="unknown"} 3',
        'infersight_feedback_total{model="loan",outcome="expired"} 0',
        f'infersight_feedback_scored_total{{model="loan"}} {scored}',
        f'infersight_feedback_correct_total{{model="loan"}} {correct}',
        'infersight_model_quality{model="loan",metric="accuracy"} 0.25',
        'infersight_model_quality{model="loan",metric="f1"} 0.3',
        'infersight_model_quality_window_rows{model="loan"} 500',
        'infersight_model_quality_threshold{model="loan",metric="accuracy"} 0.7',
        f'infersight_shadow_comparisons_total{{model="loan",result="agree"}} {agree}',
        f'infersight_shadow_comparisons_total{{model="loan",result="disagree"}} {disagree}',
        'infersight_shadow_errors_total{model="loan"} 0',
        'infersight_shadow_dropped_total{model="loan"} 2',
        'infersight_parity_probes_total{model="loan",outcome="ok"} 4',
        'infersight_parity_probes_total{model="loan",outcome="mismatch"} 2',
    ]
    return ("\n".join(lines) + "\n").encode()


def test_lifecycle_view_reads_versions_quality_shadow_parity_and_score() -> None:
    before = parse_metrics(lifecycle_metrics(90, 10, 100, 80).decode(), at=0.0)
    now = parse_metrics(lifecycle_metrics(95, 105, 300, 130).decode(), at=5.0)
    view = LifecycleView.of(now, before, LIFECYCLE, SCORE)
    assert (view.version, view.profile_version, view.version_changes) == ("v2-buggy", "v1", 1)
    assert view.outcomes == {"matched": 300, "unknown": 3}
    assert view.quality == {"accuracy": 0.25, "f1": 0.3}
    assert view.breached() == ["accuracy"]
    assert view.accuracy == pytest.approx(130 / 300)
    assert view.recent_accuracy == pytest.approx(50 / 200)
    assert view.agreement == pytest.approx(95 / 200)
    assert view.recent_agreement == pytest.approx(5 / 100)
    assert view.parity_text() == "MISMATCH (20/20 rows differ)"
    assert [m["monitor"] for m in view.monitors()] == [1, 3, 7]
    line = view.line()
    assert "version v2-buggy (1 change(s))" in line
    assert "window accuracy 0.25 (bound 0.70)" in line
    assert "parity mismatch" in line
    assert "ML Test Score 2/7 automated, alerting: 1,3" in line
    # Without the JSON documents the served version still comes from infersight_model_info.
    bare = LifecycleView.of(now)
    assert bare.version == "v2-buggy"
    assert bare.parity is None
    assert bare.recent_agreement is None


async def test_dashboard_shows_the_lifecycle_panels(sidecar: tuple[FakeSidecar, str]) -> None:
    fake, url = sidecar
    fake.lifecycle, fake.score = LIFECYCLE, SCORE
    fake.extra = lifecycle_metrics(1, 1, 0, 0).replace(b"infersight_feedback_", b"x_")
    out = io.StringIO()
    async with Dashboard(f"{url}/metrics", Console(file=out, width=160)) as dash:
        async with FeedbackSender(FeedbackConfig(url=url, delay_seconds=(0, 0))) as sender:
            dash.feedback = sender.stats
            stats = TrafficStats()
            await dash.begin(by_name("buggy_model"), "6/7", 10.0, stats)
            sender.record("r1", [1, 1, 0], "v2-buggy", "buggy_model")
            await sender.flush()
            await dash.scrape()
            live = dash.render()
            plain = dash.plain_line()
            result = await dash.end()
            final = await dash.final()
    assert result is not None
    assert result.version == "v2-buggy"
    console = Console(file=out, width=160)
    console.print(live)
    console.print(final)
    console.print(summary_table([result], sender.stats))
    text = out.getvalue()
    for expected in (
        "model version",
        "v2-buggy",
        "served by v2-buggy",
        "0.67 (n=3)",
        "MISMATCH (20/20 rows differ)",
        "shadow agrees",
        "ML Test Score: 2/7 automated",
        "dependency changes",
        "alerting",
        "accuracy (labels)",
    ):
        assert expected in text, expected
    assert "version v2-buggy" in plain
    assert "ML Test Score 2/7 automated" in plain


async def test_dashboard_without_monitoring_documents_shows_no_lifecycle_json(
    sidecar: tuple[FakeSidecar, str],
) -> None:
    _, url = sidecar
    async with Dashboard(f"{url}/metrics", Console(file=io.StringIO())) as dash:
        await dash.scrape()
        assert dash.lifecycle_doc is None
        assert dash.score_doc is None
        view = dash.lifecycle()
        assert view is not None
        assert view.score is None
        assert view.monitors() == []
        assert dash.error is None
