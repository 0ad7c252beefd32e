"""Delayed ground truth for the demo: the true label of every answered row goes back to the
sidecar's `POST /feedback` some seconds after the prediction, in batches.

The traffic generator hands each answered request to `FeedbackSender.recorder(scenario)`: the
request id the sidecar answered with (`x-request-id`), the true label of each row and the model
version named in the answer. `run()` posts the labels once they are due (`delay_seconds` after
the answer), grouped by scenario and served version; `flush()` posts whatever is still waiting.
Every batch also carries `unknown_per_batch` labels for request ids the sidecar never served (as
if another replica had served them), which the sidecar answers `unknown`.

The sender is the only client that posts feedback, so the increase of the sidecar's
`infersight_feedback_scored_total` and `infersight_feedback_correct_total` across one post is
that batch's quality as the sidecar scored it: `FeedbackStats` keeps it by served version and by
scenario (the quality before and after a bad release).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from app.demo.http_client import SessionOwner
from app.demo.traffic import OnAnswer

FEEDBACK_DELAY_SECONDS = (5.0, 8.0)
"""Labels become due this many seconds (uniform in the range) after their prediction."""
SCORED = "infersight_feedback_scored_total"
CORRECT = "infersight_feedback_correct_total"
UNKNOWN_ID_PREFIX = "never-served-"
UNKNOWN_VERSION = "?"
"""The version key for answers that named none."""


@dataclass(frozen=True)
class FeedbackConfig:
    """Where and how the delayed labels are sent."""

    url: str
    """Base URL of the sidecar (it serves `POST /feedback` and `GET /metrics`)."""
    delay_seconds: tuple[float, float] = FEEDBACK_DELAY_SECONDS
    every_seconds: float = 1.0
    """How often `run()` posts the labels that are due."""
    max_batch: int = 2000
    """Most labels in one post (the sidecar's default limit is 10 000)."""
    unknown_per_batch: int = 1
    """Labels for never-served request ids added to every post."""
    timeout_seconds: float = 10.0

    @property
    def feedback_url(self) -> str:
        return f"{self.url.rstrip('/')}/feedback"

    @property
    def metrics_url(self) -> str:
        return f"{self.url.rstrip('/')}/metrics"


@dataclass
class Tally:
    """Labels sent for one group, and how the sidecar scored them."""

    sent: int = 0
    matched: int = 0
    scored: float = 0.0
    correct: float = 0.0
    attributed: bool = True
    """False once a post of this group could not be attributed (a failed metrics scrape)."""

    @property
    def accuracy(self) -> float | None:
        """Share of scored labels the model got right (None before any)."""
        return self.correct / self.scored if self.scored else None


@dataclass
class FeedbackStats:
    """What the sender did and what the sidecar answered."""

    posts: int = 0
    sent: int = 0
    """Labels posted (the never-served ones included)."""
    unknown_sent: int = 0
    """Labels posted for request ids the sidecar never served."""
    pending: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    """Outcome counts from the sidecar's answers (matched, unknown, duplicate, ...)."""
    errors: Counter[str] = field(default_factory=Counter)
    """Posts that failed, by status code or exception name (their labels are dropped)."""
    by_version: dict[str, Tally] = field(default_factory=dict)
    by_scenario: dict[str, Tally] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Label:
    due: float
    request_id: str
    row: int
    label: int
    scenario: str
    version: str


def counter_sum(text: str, sample: str) -> float | None:
    """Sum of every series of `sample` in a Prometheus exposition: 0 when it has none (nothing
    counted yet), None when the text is not an exposition."""
    total = 0.0
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == sample:
                    total += float(s.value)
    except ValueError:
        return None
    return total


class FeedbackSender(SessionOwner):
    """Collects answered rows' labels and posts them to the sidecar once they are due."""

    def __init__(
        self,
        config: FeedbackConfig,
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.stats = FeedbackStats()
        self._rng = random.Random(seed)
        self._clock = clock
        self._pending: list[_Label] = []
        self.session_timeout = config.timeout_seconds
        self._scores: tuple[float, float] | None = None
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._unknown_ids = 0

    def record(
        self, request_id: str, labels: list[int], version: str | None, scenario: str
    ) -> None:
        """Keep the labels of one answered request until they are due."""
        low, high = self.config.delay_seconds
        due = self._clock() + self._rng.uniform(low, high)
        key = version or UNKNOWN_VERSION
        for row, label in enumerate(labels):
            self._pending.append(_Label(due, request_id, row, label, scenario, key))
        self.stats.pending = len(self._pending)

    def recorder(self, scenario: str) -> OnAnswer:
        """The `on_answer` callback of `run_traffic` for one scenario."""

        def on_answer(request_id: str, labels: list[int], version: str | None) -> None:
            self.record(request_id, labels, version, scenario)

        return on_answer

    async def run(self) -> None:
        """Post the due labels every `every_seconds` until `stop()` (labels being posted are
        never lost: the loop ends between posts)."""
        while not self._stop.is_set():
            await self.send_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.every_seconds)

    def stop(self) -> None:
        """Make `run()` return after its current post."""
        self._stop.set()

    async def send_due(self) -> int:
        """Post every label that is due; returns how many were posted (never-served included)."""
        now = self._clock()
        return await self._send(lambda label: label.due <= now)

    async def flush(self) -> int:
        """Post every label still waiting, due or not."""
        return await self._send(lambda label: True)

    async def _send(self, ready: Callable[[_Label], bool]) -> int:
        async with self._lock:
            due = [label for label in self._pending if ready(label)]
            if not due:
                return 0
            self._pending = [label for label in self._pending if not ready(label)]
            self.stats.pending = len(self._pending)
            groups: dict[tuple[str, str], list[_Label]] = {}
            for label in due:
                groups.setdefault((label.scenario, label.version), []).append(label)
            posted = 0
            for (scenario, version), labels in groups.items():
                size = self.config.max_batch
                for start in range(0, len(labels), size):
                    posted += await self._post(scenario, version, labels[start : start + size])
            return posted

    def _unknown_items(self) -> list[dict[str, Any]]:
        items = []
        for _ in range(self.config.unknown_per_batch):
            self._unknown_ids += 1
            request_id = f"{UNKNOWN_ID_PREFIX}{self._unknown_ids}"
            items.append({"request_id": request_id, "row": 0, "label": self._rng.randint(0, 1)})
        return items

    async def _post(self, scenario: str, version: str, labels: list[_Label]) -> int:
        if self._session is None:
            raise RuntimeError("use FeedbackSender as an async context manager")
        if self._scores is None:
            self._scores = await self._scrape_scores()
        items: list[dict[str, Any]] = [
            {"request_id": x.request_id, "row": x.row, "label": x.label} for x in labels
        ]
        unknown = self._unknown_items()
        items += unknown
        body = orjson.dumps({"feedback": items})
        headers = {"content-type": "application/json"}
        try:
            async with self._session.post(
                self.config.feedback_url, data=body, headers=headers
            ) as resp:
                answer = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.stats.errors[type(exc).__name__] += 1
            return 0
        if status != 200:
            self.stats.errors[str(status)] += 1
            return 0
        self.stats.posts += 1
        self.stats.sent += len(items)
        self.stats.unknown_sent += len(unknown)
        outcomes = _outcomes(answer)
        self.stats.outcomes.update(outcomes)
        before, after = self._scores, await self._scrape_scores()
        self._scores = after
        for tally in (
            self.stats.by_version.setdefault(version, Tally()),
            self.stats.by_scenario.setdefault(scenario, Tally()),
        ):
            tally.sent += len(labels)
            tally.matched += outcomes.get("matched", 0)
            if before is None or after is None:
                tally.attributed = False
                continue
            tally.scored += max(0.0, after[0] - before[0])
            tally.correct += max(0.0, after[1] - before[1])
        return len(items)

    async def _scrape_scores(self) -> tuple[float, float] | None:
        """(scored, correct) totals from the sidecar's metrics, or None when unavailable."""
        assert self._session is not None
        try:
            async with self._session.get(self.config.metrics_url) as resp:
                if resp.status != 200:
                    return None
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            return None
        scored, correct = counter_sum(text, SCORED), counter_sum(text, CORRECT)
        if scored is None or correct is None:
            return None
        return scored, correct


def _outcomes(answer: bytes) -> Counter[str]:
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return Counter()
    raw = doc.get("outcomes") if isinstance(doc, dict) else None
    if not isinstance(raw, dict):
        return Counter()
    return Counter({str(k): int(v) for k, v in raw.items() if type(v) is int})


def accuracy_text(tally: Tally | None) -> str:
    """`0.81 (n=1234)`, or `-` without scored labels."""
    if tally is None or tally.accuracy is None or math.isnan(tally.accuracy):
        return "-"
    return f"{tally.accuracy:.2f} (n={tally.scored:.0f})"
