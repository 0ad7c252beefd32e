"""The demo's terminal view of what InferSight sees, scraped from the sidecar's `GET /metrics`.

Only the documented metric names are read (DESIGN.md); an absent metric shows nothing. Rates,
latency quantiles and bin shares come from counter deltas over a short sliding window. On a
terminal a rich `Live` view refreshes about twice a second; otherwise plain lines are printed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

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


def summary_table(results: list[ScenarioResult]) -> Table:
    """Per scenario: requests, rejections, violations by kind, and what was seen."""
    table = Table(title="What InferSight saw, by scenario", show_lines=True)
    table.add_column("scenario", no_wrap=True)
    for name in ("requests", "rejected", "violations", "drift detected", "seen"):
        table.add_column(name, overflow="fold")
    for r in results:
        table.add_row(
            r.scenario.name,
            _counts(r.client.status_classes(), "\n"),
            _counts(r.seen.rejected, "\n") if r.seen else "-",
            _counts(r.violations_by_kind(), "\n"),
            "\n".join(r.drift) or "-",
            escape(r.what_was_seen()),
        )
    return table


@dataclass
class _Current:
    scenario: Scenario
    position: str
    ends_at: float
    stats: TrafficStats
    start: Snapshot | None


class Dashboard:
    """Scrapes the sidecar's metrics and shows them live; collects per-scenario results."""

    def __init__(
        self,
        metrics_url: str,
        console: Console | None = None,
        *,
        window_seconds: float = 5.0,
        refresh_seconds: float = 0.5,
        plain_every_seconds: float = 5.0,
    ) -> None:
        self.metrics_url = metrics_url
        self.console = console or Console()
        self.window_seconds = window_seconds
        self.refresh_seconds = refresh_seconds
        self.plain_every_seconds = plain_every_seconds
        self.results: list[ScenarioResult] = []
        self.error: str | None = None
        self._history: deque[Snapshot] = deque()
        self._current: _Current | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Dashboard:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

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
        return snap

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
        result = ScenarioResult(current.scenario, current.stats, seen, drift)
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
