"""The demo's terminal view of what InferSight sees, scraped from the sidecar's `GET /metrics`,
`GET /monitoring/lifecycle` and `GET /monitoring/ml-test-score`.

Only the documented metric names are read (DESIGN.md); an absent metric shows nothing. Rates,
latency quantiles and bin shares come from counter deltas over a short sliding window. Compact
lifecycle panels show the served version and its changes, ground-truth feedback and quality,
the shadow candidate's agreement, the latest parity probe, and the ML Test Score monitors. On a
terminal a rich `Live` view refreshes about twice a second; otherwise plain lines are printed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families
from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from app.demo.feedback import FeedbackStats, accuracy_text
from app.demo.http_client import SessionOwner
from app.demo.scenarios import Scenario
from app.demo.traffic import TrafficStats

LabelKey = tuple[tuple[str, str], ...]
Samples = dict[str, dict[LabelKey, float]]

REQUESTS = "infersight_requests_total"
REJECTED = "infersight_rejected_requests_total"
DURATION_BUCKET = "infersight_request_duration_seconds_bucket"
VIOLATIONS = "infersight_validation_violations_total"
FEATURE_BINS = "infersight_feature_bin_total"
REFERENCE_BINS = "infersight_reference_bin_ratio"
PREDICTION_BINS = "infersight_prediction_bin_total"
REFERENCE_PREDICTION_BINS = "infersight_reference_prediction_bin_ratio"
MIN_SHIFT = 0.05
"""A bin is 'shifted' when its share moved at least this far from the reference."""
MIN_BIN_ROWS = 30
"""Bin shares of fewer rows are noise and are not shown."""
NOISE_SIGMAS = 4.0
"""...nor are changes within this many binomial standard errors of the reference share."""
DRIFT_DETECTED = "infersight_drift_detected"
MODEL_INFO = "infersight_model_info"
VERSION_CHANGES = "infersight_model_version_changes_total"
FEEDBACK_OUTCOMES = "infersight_feedback_total"
FEEDBACK_SCORED = "infersight_feedback_scored_total"
FEEDBACK_CORRECT = "infersight_feedback_correct_total"
QUALITY = "infersight_model_quality"
QUALITY_ROWS = "infersight_model_quality_window_rows"
QUALITY_THRESHOLD = "infersight_model_quality_threshold"
SHADOW_COMPARISONS = "infersight_shadow_comparisons_total"
SHADOW_ERRORS = "infersight_shadow_errors_total"
SHADOW_DROPPED = "infersight_shadow_dropped_total"
PARITY_PROBES = "infersight_parity_probes_total"
LIFECYCLE_PATH = "/monitoring/lifecycle"
ML_TEST_SCORE_PATH = "/monitoring/ml-test-score"
MONITOR_NAMES = {
    1: "dependency changes",
    2: "data invariants",
    3: "train/serve parity",
    4: "model staleness",
    5: "numerical stability",
    6: "latency, errors, RAM",
    7: "prediction quality",
}
"""Short names of the ML Test Score monitors (the sidecar's document has the paper's wording)."""
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "mae", "rmse", "ece"})


@dataclass(frozen=True)
class Snapshot:
    """One scrape: sample name → label set → value."""

    at: float
    samples: Samples = field(default_factory=dict)

    def series(self, name: str) -> dict[LabelKey, float]:
        return self.samples.get(name, {})


def parse_metrics(text: str, at: float | None = None) -> Snapshot:
    """Parse Prometheus text exposition (unparseable text gives an empty snapshot)."""
    samples: Samples = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = tuple(sorted(sample.labels.items()))
                samples.setdefault(sample.name, {})[key] = float(sample.value)
    except ValueError:
        samples = {}
    return Snapshot(time.monotonic() if at is None else at, samples)


def _group(
    values: Iterable[tuple[LabelKey, float]], by: tuple[str, ...]
) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for key, value in values:
        labels = dict(key)
        group = tuple(labels.get(b, "") for b in by)
        out[group] = out.get(group, 0.0) + value
    return out


def totals(snap: Snapshot, name: str, by: tuple[str, ...] = ()) -> dict[tuple[str, ...], float]:
    """Current values of `name` summed by the `by` labels."""
    return _group(snap.series(name).items(), by)


def deltas(
    cur: Snapshot, prev: Snapshot | None, name: str, by: tuple[str, ...] = ()
) -> dict[tuple[str, ...], float]:
    """Counter increases of `name` since `prev`, summed by the `by` labels (resets tolerated)."""
    before = prev.series(name) if prev is not None else {}
    increases = []
    for key, value in cur.series(name).items():
        old = before.get(key, 0.0)
        increases.append((key, value - old if value >= old else value))
    return _group(increases, by)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Quantile from cumulative bucket counts by upper bound, interpolated like PromQL."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def latency_quantile(cur: Snapshot, prev: Snapshot | None, q: float) -> float | None:
    """Sidecar request latency quantile (seconds) over the interval, all models together."""
    by_le = deltas(cur, prev, DURATION_BUCKET, ("le",))
    try:
        buckets = {float(le): count for (le,), count in by_le.items()}
    except ValueError:
        return None
    return histogram_quantile(q, buckets)


@dataclass(frozen=True)
class BinShift:
    """A bin whose share in an interval differs from its reference share."""

    column: str
    bin: str
    share: float
    reference: float
    rows: float

    @property
    def change(self) -> float:
        return self.share - self.reference

    def describe(self) -> str:
        return f"{self.column}[{self.bin}] {self.share:.0%} (ref {self.reference:.0%})"


def _shifts(
    cur: Snapshot, prev: Snapshot | None, counts: str, reference: str, column: str, suffix: str
) -> list[BinShift]:
    ref = totals(cur, reference, ("model", column, "bin"))
    per_column: dict[tuple[str, str], dict[str, float]] = {}
    for (model, col, bin_), n in deltas(cur, prev, counts, ("model", column, "bin")).items():
        per_column.setdefault((model, col), {})[bin_] = n
    out = []
    for (model, col), bins in per_column.items():
        rows = sum(bins.values())
        if rows < MIN_BIN_ROWS:
            continue
        for bin_, n in bins.items():
            share, expected = n / rows, ref.get((model, col, bin_), 0.0)
            noise = NOISE_SIGMAS * math.sqrt(expected * (1.0 - expected) / rows)
            if abs(share - expected) >= max(MIN_SHIFT, noise):
                out.append(BinShift(col + suffix, bin_, share, expected, rows))
    return out


def shifted_bins(cur: Snapshot, prev: Snapshot | None, top: int = 6) -> list[BinShift]:
    """Feature and prediction bins furthest from their reference share over the interval."""
    found = _shifts(cur, prev, FEATURE_BINS, REFERENCE_BINS, "feature", "")
    found += _shifts(
        cur, prev, PREDICTION_BINS, REFERENCE_PREDICTION_BINS, "output", " (prediction)"
    )
    # Largest moves first; on a tie the bin that grew (what arrived) before the one that shrank.
    return sorted(found, key=lambda s: (-round(abs(s.change), 6), -s.change))[:top]


def drifting(snap: Snapshot) -> list[str]:
    """Features the sidecar's drift job currently flags (`infersight_drift_detected` == 1)."""
    flagged = totals(snap, DRIFT_DETECTED, ("feature",))
    return sorted(f for (f,), v in flagged.items() if v >= 1)


@dataclass(frozen=True)
class Interval:
    """What the sidecar reported between two scrapes."""

    seconds: float
    requests: float
    statuses: dict[str, float]
    rejected: dict[str, float]
    violations: dict[tuple[str, str], float]
    p50: float | None
    p99: float | None
    shifts: list[BinShift]

    @classmethod
    def between(cls, cur: Snapshot, prev: Snapshot | None) -> Interval:
        seconds = cur.at - prev.at if prev is not None else 0.0
        statuses = {k[0]: v for k, v in deltas(cur, prev, REQUESTS, ("status",)).items() if v}
        rejected = {k[0]: v for k, v in deltas(cur, prev, REJECTED, ("reason",)).items() if v}
        by_kind = deltas(cur, prev, VIOLATIONS, ("feature", "kind"))
        violations = {(k[0], k[1]): v for k, v in by_kind.items() if v}
        return cls(
            seconds,
            sum(statuses.values()),
            statuses,
            rejected,
            violations,
            latency_quantile(cur, prev, 0.5),
            latency_quantile(cur, prev, 0.99),
            shifted_bins(cur, prev),
        )

    @property
    def rate(self) -> float | None:
        return self.requests / self.seconds if self.seconds > 0 else None


def _rate(per_second: float | None) -> str:
    return "-" if per_second is None else f"{per_second:.1f}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _counts(counts: dict[str, float] | dict[str, int], sep: str = "  ") -> str:
    return sep.join(f"{k} {v:.0f}" for k, v in sorted(counts.items()) if v) or "-"


@dataclass
class ScenarioResult:
    """One played scenario, for the final summary."""

    scenario: Scenario
    client: TrafficStats
    seen: Interval | None
    drift: list[str] = field(default_factory=list)
    """Features the drift cycle flagged when the scenario ended."""
    version: str | None = None
    """The model version the sidecar saw served when the scenario ended."""

    def violations_by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (_, kind), n in (self.seen.violations if self.seen else {}).items():
            out[kind] = out.get(kind, 0.0) + n
        return out

    def what_was_seen(self) -> str:
        """A short account from the sidecar's metrics (or the client's view without them)."""
        if self.seen is None or self.seen.requests == 0:
            p99 = self.client.quantile(0.99)
            return f"no sidecar metrics; client p99 {_ms(p99)}"
        parts = []
        if self.seen.shifts:
            parts.append(self.seen.shifts[0].describe())
        if self.seen.violations:
            (feature, kind), n = max(self.seen.violations.items(), key=lambda kv: kv[1])
            parts.append(f"{kind} on {feature} x{n:.0f}")
        parts.append(f"p50 {_ms(self.seen.p50)} p99 {_ms(self.seen.p99)}")
        return "; ".join(parts)


def summary_table(results: list[ScenarioResult], feedback: FeedbackStats | None = None) -> Table:
    """Per scenario: requests, rejections, violations by kind, drift, the served version, what
    was seen and, with `feedback`, the accuracy the sidecar scored from its delayed labels."""
    table = Table(title="What InferSight saw, by scenario", show_lines=True)
    table.add_column("scenario", no_wrap=True)
    names = ["requests", "rejected", "violations", "drift detected", "version", "seen"]
    if feedback is not None:
        names.append("accuracy (labels)")
    for name in names:
        table.add_column(name, overflow="fold")
    for r in results:
        row = [
            r.scenario.name,
            _counts(r.client.status_classes(), "\n"),
            _counts(r.seen.rejected, "\n") if r.seen else "-",
            _counts(r.violations_by_kind(), "\n"),
            "\n".join(r.drift) or "-",
            escape(r.version or "-"),
            escape(r.what_was_seen()),
        ]
        if feedback is not None:
            row.append(accuracy_text(feedback.by_scenario.get(r.scenario.name)))
        table.add_row(*row)
    return table


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _breaches(metric: str, value: float, bound: float) -> bool:
    return value > bound if metric in LOWER_IS_BETTER else value < bound


@dataclass(frozen=True)
class LifecycleView:
    """The lifecycle side of the sidecar at one scrape, summed over its models (the demo has
    one): served version, feedback and quality, shadow, parity, and the ML Test Score."""

    version: str | None = None
    profile_version: str | None = None
    version_changes: float = 0.0
    outcomes: dict[str, float] = field(default_factory=dict)
    """Feedback labels by outcome (matched, unknown, ...), since the start."""
    quality: dict[str, float] = field(default_factory=dict)
    """The sidecar's quality window (`infersight_model_quality`): metric → value."""
    window_rows: float | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    scored: float = 0.0
    correct: float = 0.0
    recent_scored: float = 0.0
    recent_correct: float = 0.0
    shadow: bool = False
    """A shadow is configured (its metrics are exported)."""
    agree: float = 0.0
    disagree: float = 0.0
    recent_agree: float = 0.0
    recent_disagree: float = 0.0
    shadow_errors: float = 0.0
    shadow_dropped: float = 0.0
    parity: dict[str, Any] | None = None
    """The latest parity probe (from `/monitoring/lifecycle`)."""
    parity_probes: dict[str, float] = field(default_factory=dict)
    score: dict[str, Any] | None = None
    """The `/monitoring/ml-test-score` document."""

    @classmethod
    def of(
        cls,
        cur: Snapshot,
        prev: Snapshot | None = None,
        lifecycle: dict[str, Any] | None = None,
        score: dict[str, Any] | None = None,
    ) -> LifecycleView:
        """Read the view from a scrape (`prev`: the start of the recent window) and the
        sidecar's JSON documents (either may be None)."""
        doc = lifecycle or {}
        versions = _section(doc, "versions")
        model_doc: dict[str, Any] = next((v for v in versions.values() if isinstance(v, dict)), {})
        served = model_doc.get("version")
        if not isinstance(served, str):
            info = [dict(k) for k, v in cur.series(MODEL_INFO).items() if v >= 1]
            served = info[0].get("version") if info else None
        parity_doc = _section(doc, "parity")
        parity = next((p for p in parity_doc.values() if isinstance(p, dict)), None)
        outcomes = {k[0]: v for k, v in totals(cur, FEEDBACK_OUTCOMES, ("outcome",)).items() if v}
        quality = {
            k[0]: v
            for k, v in totals(cur, QUALITY, ("metric",)).items()
            if not math.isnan(v)
        }  # fmt: skip
        thresholds = {
            k[0]: v for k, v in totals(cur, QUALITY_THRESHOLD, ("metric",)).items()
        }  # fmt: skip
        rows = totals(cur, QUALITY_ROWS)
        comparisons = {k[0]: v for k, v in totals(cur, SHADOW_COMPARISONS, ("result",)).items()}
        recent = {k[0]: v for k, v in deltas(cur, prev, SHADOW_COMPARISONS, ("result",)).items()}
        probes = {k[0]: v for k, v in totals(cur, PARITY_PROBES, ("outcome",)).items()}
        profile_version = model_doc.get("profile_version")
        return cls(
            version=served if isinstance(served, str) else None,
            profile_version=profile_version if isinstance(profile_version, str) else None,
            version_changes=sum(totals(cur, VERSION_CHANGES).values()),
            outcomes=outcomes,
            quality=quality,
            window_rows=rows.get(()) if rows else None,
            thresholds=thresholds,
            scored=sum(totals(cur, FEEDBACK_SCORED).values()),
            correct=sum(totals(cur, FEEDBACK_CORRECT).values()),
            recent_scored=sum(deltas(cur, prev, FEEDBACK_SCORED).values()) if prev else 0.0,
            recent_correct=sum(deltas(cur, prev, FEEDBACK_CORRECT).values()) if prev else 0.0,
            shadow=bool(cur.series(SHADOW_COMPARISONS)),
            agree=comparisons.get("agree", 0.0),
            disagree=comparisons.get("disagree", 0.0),
            recent_agree=recent.get("agree", 0.0) if prev else 0.0,
            recent_disagree=recent.get("disagree", 0.0) if prev else 0.0,
            shadow_errors=sum(totals(cur, SHADOW_ERRORS).values()),
            shadow_dropped=sum(totals(cur, SHADOW_DROPPED).values()),
            parity=parity,
            parity_probes=probes,
            score=score if isinstance(score, dict) else None,
        )

    @property
    def accuracy(self) -> float | None:
        """Accuracy of every label scored so far (fleet counters)."""
        return _ratio(self.correct, self.scored)

    @property
    def recent_accuracy(self) -> float | None:
        return _ratio(self.recent_correct, self.recent_scored)

    @property
    def agreement(self) -> float | None:
        """Share of compared rows where the shadow agreed with the primary."""
        return _ratio(self.agree, self.agree + self.disagree)

    @property
    def recent_agreement(self) -> float | None:
        return _ratio(self.recent_agree, self.recent_agree + self.recent_disagree)

    def breached(self) -> list[str]:
        """Quality metrics of the window past their configured bound."""
        return [
            m
            for m, bound in sorted(self.thresholds.items())
            if m in self.quality and _breaches(m, self.quality[m], bound)
        ]

    def monitors(self) -> list[dict[str, Any]]:
        raw = self.score.get("monitors") if self.score else None
        return [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []

    def parity_text(self) -> str:
        p = self.parity
        if p is None:
            return "waiting for the first probe" if self.parity_probes else "-"
        outcome, rows, bad = p.get("outcome"), p.get("rows"), p.get("mismatched_rows")
        if outcome == "ok":
            return f"ok ({rows} golden rows match)"
        if outcome == "mismatch":
            return f"MISMATCH ({bad}/{rows} rows differ)"
        return f"error: {str(p.get('error'))[:60]}"

    def line(self) -> str:
        """One line for logs and pipes."""
        parts = []
        if self.version:
            parts.append(f"version {self.version} ({self.version_changes:.0f} change(s))")
        if self.outcomes:
            acc = self.quality.get("accuracy")
            bound = self.thresholds.get("accuracy")
            quality = f", window accuracy {_num(acc)}" if acc is not None else ""
            quality += f" (bound {bound:.2f})" if acc is not None and bound is not None else ""
            parts.append("labels: " + _counts(self.outcomes, " ") + quality)
        if self.shadow:
            parts.append(
                f"shadow agree {_share(self.agreement)} (recent {_share(self.recent_agreement)})"
            )
        if self.parity is not None:
            parts.append(f"parity {self.parity.get('outcome')}")
        if self.score is not None:
            alerting = [
                str(m.get("monitor")) for m in self.monitors() if m.get("state") == "alerting"
            ]
            automated = f"{self.score.get('automated', '?')}/{self.score.get('max_score', '?')}"
            parts.append(
                f"ML Test Score {automated} automated"
                + (f", alerting: {','.join(alerting)}" if alerting else "")
            )
        return "  |  ".join(parts)


def _kv_table(title: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("", no_wrap=True)
    table.add_column("")
    return table


def lifecycle_tables(
    view: LifecycleView,
    feedback: FeedbackStats | None = None,
    recent: str | None = None,
) -> list[RenderableType]:
    """Three compact panels side by side: the served version with the shadow and parity, the
    ground truth and quality, and the ML Test Score monitors. `recent` names the sliding window
    (None: totals only)."""
    release = _kv_table("model version, shadow, parity")
    mismatch = (
        view.version is not None
        and view.profile_version is not None
        and view.version != view.profile_version
    )
    served = Text(view.version or "-", style="bold red" if mismatch else "bold")
    if view.profile_version is not None:
        served.append(f" (profile {view.profile_version})", style="dim")
    release.add_row("served", served)
    changes = Text(f"{view.version_changes:.0f}", style="red" if view.version_changes else "")
    release.add_row("version changes", changes)
    if view.shadow:
        compared = view.agree + view.disagree
        release.add_row("shadow agrees", f"{_share(view.agreement)} of {compared:.0f} rows")
        if recent is not None:
            release.add_row(f"  {recent}", _share(view.recent_agreement))
        release.add_row(
            "shadow errors", f"{view.shadow_errors:.0f} (dropped {view.shadow_dropped:.0f})"
        )
    else:
        release.add_row("shadow", "off")
    bad_parity = view.parity is not None and view.parity.get("outcome") != "ok"
    release.add_row("parity", Text(view.parity_text(), style="bold red" if bad_parity else ""))
    release.add_row("parity probes", _counts(view.parity_probes))

    quality = _kv_table("ground truth (delayed labels)")
    quality.add_row("outcomes", _counts(view.outcomes))
    if "accuracy" in view.quality:
        bound = view.thresholds.get("accuracy")
        breached = "accuracy" in view.breached()
        text = Text(_num(view.quality["accuracy"]), style="bold red" if breached else "")
        if bound is not None:
            text.append(f" (bound {bound:.2f})", style="dim")
        rows = f" {view.window_rows:.0f}" if view.window_rows is not None else ""
        quality.add_row(f"accuracy, window{rows}", text)
    if recent is not None and view.recent_scored:
        quality.add_row(
            f"accuracy, {recent}", f"{_num(view.recent_accuracy)} (n={view.recent_scored:.0f})"
        )
    quality.add_row("accuracy, all", f"{_num(view.accuracy)} (n={view.scored:.0f})")
    if feedback is not None:
        for name, tally in sorted(feedback.by_version.items()):
            quality.add_row(f"served by {escape(name)}", accuracy_text(tally))
        if feedback.pending:
            quality.add_row("labels waiting", f"{feedback.pending}")

    columns: list[RenderableType] = [release, quality]
    monitors = view.monitors()
    if view.score is not None and monitors:
        automated = f"{view.score.get('automated', '?')}/{view.score.get('max_score', '?')}"
        mts = Table(title=f"ML Test Score: {automated} automated", title_justify="left")
        for column in ("#", "monitor", "auto", "state"):
            mts.add_column(column, no_wrap=True)
        for m in monitors:
            number = m.get("monitor")
            state = str(m.get("state", "-"))
            style = {"alerting": "bold red", "ok": "green"}.get(state, "dim")
            short = MONITOR_NAMES.get(number) if isinstance(number, int) else None
            mts.add_row(
                str(number),
                escape(short or str(m.get("test", ""))),
                "yes" if m.get("automated") else "no",
                Text(state, style=style),
            )
        columns.append(mts)
    return [Columns(columns, padding=(0, 2))]


@dataclass
class _Current:
    scenario: Scenario
    position: str
    ends_at: float
    stats: TrafficStats
    start: Snapshot | None


class Dashboard(SessionOwner):
    """Scrapes the sidecar's metrics and shows them live; collects per-scenario results."""

    def __init__(
        self,
        metrics_url: str,
        console: Console | None = None,
        *,
        window_seconds: float = 5.0,
        refresh_seconds: float = 0.5,
        plain_every_seconds: float = 5.0,
        sidecar_url: str | None = None,
        lifecycle_every_seconds: float = 1.0,
    ) -> None:
        """`sidecar_url` serves the `/monitoring/*` documents (default: `metrics_url` without
        its `/metrics`); they are read at most every `lifecycle_every_seconds`."""
        self.metrics_url = metrics_url
        self.console = console or Console()
        self.window_seconds = window_seconds
        self.refresh_seconds = refresh_seconds
        self.plain_every_seconds = plain_every_seconds
        self.sidecar_url = (sidecar_url or metrics_url.removesuffix("/metrics")).rstrip("/")
        self.lifecycle_every_seconds = lifecycle_every_seconds
        self.results: list[ScenarioResult] = []
        self.error: str | None = None
        self.feedback: FeedbackStats | None = None
        """The feedback sender's stats, shown in the ground-truth panel when set."""
        self.lifecycle_doc: dict[str, Any] | None = None
        self.score_doc: dict[str, Any] | None = None
        self._polled_at: float | None = None
        self._history: deque[Snapshot] = deque()
        self._current: _Current | None = None

    async def scrape(self) -> Snapshot | None:
        """Fetch and parse `/metrics` once; remember it for the window. None when unavailable."""
        if self._session is None:
            raise RuntimeError("use Dashboard as an async context manager")
        try:
            async with self._session.get(self.metrics_url) as resp:
                text = await resp.text()
                if resp.status != 200:
                    self.error = f"GET /metrics answered {resp.status}"
                    return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.error = f"GET /metrics failed: {type(exc).__name__}"
            return None
        self.error = None
        snap = parse_metrics(text)
        self._history.append(snap)
        while len(self._history) > 2 and self._history[1].at <= snap.at - self.window_seconds:
            self._history.popleft()
        due = self._polled_at is None or snap.at - self._polled_at >= self.lifecycle_every_seconds
        if due:
            await self.poll_lifecycle()
        return snap

    async def _get_json(self, path: str) -> dict[str, Any] | None:
        assert self._session is not None
        try:
            async with self._session.get(self.sidecar_url + path) as resp:
                if resp.status != 200:
                    return None
                doc = orjson.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            return None
        return doc if isinstance(doc, dict) else None

    async def poll_lifecycle(self) -> None:
        """Read `/monitoring/lifecycle` and `/monitoring/ml-test-score` (None when absent)."""
        if self._session is None:
            raise RuntimeError("use Dashboard as an async context manager")
        self._polled_at = time.monotonic()
        self.lifecycle_doc = await self._get_json(LIFECYCLE_PATH)
        self.score_doc = await self._get_json(ML_TEST_SCORE_PATH)

    def lifecycle(self, recent: bool = True) -> LifecycleView | None:
        """The lifecycle view at the latest scrape (`recent`: with the sliding window's deltas)."""
        if not self._history:
            return None
        prev = self._history[0] if recent and len(self._history) > 1 else None
        return LifecycleView.of(self._history[-1], prev, self.lifecycle_doc, self.score_doc)

    async def final(self) -> RenderableType:
        """Scrape once more and render the lifecycle panels with totals (for the end)."""
        await self.scrape()
        await self.poll_lifecycle()
        view = self.lifecycle(recent=False)
        if view is None:
            return Text(self.error or "no sidecar metrics", style="yellow")
        return Group(*lifecycle_tables(view, self.feedback))

    async def begin(
        self, scenario: Scenario, position: str, seconds: float, stats: TrafficStats
    ) -> None:
        """A scenario starts now and plays for `seconds`; `stats` fills as its traffic runs."""
        self._history.clear()
        start = await self.scrape()
        self._current = _Current(scenario, position, time.monotonic() + seconds, stats, start)

    async def end(self) -> ScenarioResult | None:
        """The current scenario is over: record what the sidecar saw during it."""
        current, self._current = self._current, None
        if current is None:
            return None
        snap = await self.scrape()
        seen = Interval.between(snap, current.start) if snap is not None else None
        drift = drifting(snap) if snap is not None else []
        view = self.lifecycle() if snap is not None else None
        version = view.version if view is not None else None
        result = ScenarioResult(current.scenario, current.stats, seen, drift, version)
        self.results.append(result)
        return result

    def window(self) -> Interval | None:
        """The sliding window: latest scrape against the oldest one kept."""
        if len(self._history) < 2:
            return None
        return Interval.between(self._history[-1], self._history[0])

    def render(self) -> RenderableType:
        """The live view."""
        cur = self._current
        if cur is None:
            header = Text("waiting for traffic", style="bold")
        else:
            left = max(0.0, cur.ends_at - time.monotonic())
            header = Text(f"{cur.position} {cur.scenario.name}", style="bold")
            header.append(f"  ({left:.0f} s left)\n", style="dim")
            header.append(cur.scenario.description)
        parts: list[RenderableType] = [Panel(header, title="InferSight demo")]
        if cur is not None:
            s = cur.stats
            parts.append(
                Text(
                    f"client: sent {s.requests}  {_counts(s.status_classes())}  "
                    f"p50 {_ms(s.quantile(0.5))}  p99 {_ms(s.quantile(0.99))}",
                    style="dim",
                )
            )
        if self.error:
            parts.append(Text(self.error, style="yellow"))
        w = self.window()
        if w is not None:
            latest = self._history[-1]
            total = Interval.between(latest, cur.start) if cur and cur.start else None
            parts.extend(self._tables(w, total, drifting(latest)))
            view = self.lifecycle()
            if view is not None:
                parts.extend(lifecycle_tables(view, self.feedback, f"last {w.seconds:.0f} s"))
        return Group(*parts)

    def _tables(
        self, w: Interval, total: Interval | None, drift: list[str]
    ) -> list[RenderableType]:
        recent = f"last {w.seconds:.0f} s"
        traffic = Table(title="sidecar", title_justify="left")
        for name in ("", recent, "this scenario"):
            traffic.add_column(name)
        t = total or w
        traffic.add_row("requests/s", _rate(w.rate), _rate(t.rate))
        traffic.add_row("latency p50", _ms(w.p50), _ms(t.p50))
        traffic.add_row("latency p99", _ms(w.p99), _ms(t.p99))
        traffic.add_row("status", _counts(w.statuses, "\n"), _counts(t.statuses, "\n"))
        traffic.add_row("rejected", _counts(w.rejected, "\n"), _counts(t.rejected, "\n"))
        if drift:
            traffic.add_row("drift detected", ", ".join(drift), "")
        violations = Table(title="validation violations", title_justify="left")
        for name in ("feature", "kind", recent, "this scenario"):
            violations.add_column(name)
        ranked = sorted(t.violations.items(), key=lambda kv: -kv[1])[:8]
        for (feature, kind), n in ranked:
            violations.add_row(
                escape(feature), kind, f"{w.violations.get((feature, kind), 0):.0f}", f"{n:.0f}"
            )
        grid = Table.grid(padding=(0, 2))
        grid.add_row(traffic, violations if ranked else "")
        out: list[RenderableType] = [grid]
        if w.shifts:
            shifts = Table(title=f"top shifted bins, {recent} vs reference", title_justify="left")
            for name in ("column", "bin", "share", "reference", "change"):
                shifts.add_column(name)
            for b in w.shifts:
                shifts.add_row(
                    escape(b.column),
                    escape(b.bin),
                    f"{b.share:.0%}",
                    f"{b.reference:.0%}",
                    f"{b.change:+.0%}",
                )
            out.append(shifts)
        return out

    def plain_line(self) -> str:
        """One line for logs and pipes."""
        cur = self._current
        parts = [f"[{cur.scenario.name}]" if cur else "[demo]"]
        w = self.window()
        if w is not None and w.requests:
            rate = w.rate
            parts.append(f"{0.0 if rate is None else rate:.1f} req/s")
            parts.append(f"p50 {_ms(w.p50)} p99 {_ms(w.p99)}")
            parts.append(_counts(w.statuses))
            if w.rejected:
                parts.append("rejected: " + _counts(w.rejected))
            if w.shifts:
                parts.append("top shift: " + w.shifts[0].describe())
            drift = drifting(self._history[-1]) if self._history else []
            if drift:
                parts.append("drift: " + ", ".join(drift))
        elif cur is not None:
            parts.append(f"client sent {cur.stats.requests} {_counts(cur.stats.status_classes())}")
        view = self.lifecycle()
        lifecycle = view.line() if view is not None else ""
        if lifecycle:
            parts.append("\n    " + lifecycle)
        if self.error:
            parts.append(self.error)
        return "  ".join(parts)

    async def run(self) -> None:
        """Scrape and show until cancelled (Live view on a terminal, plain lines otherwise)."""
        if not self.console.is_terminal:
            while True:
                await self.scrape()
                self.console.print(self.plain_line(), markup=False, highlight=False, soft_wrap=True)
                await asyncio.sleep(self.plain_every_seconds)
        with Live(self.render(), console=self.console, auto_refresh=False) as live:
            while True:
                await self.scrape()
                live.update(self.render(), refresh=True)
                await asyncio.sleep(self.refresh_seconds)
