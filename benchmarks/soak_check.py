"""Sampling a process under steady load, and the verdicts on whether anything grows.

Shared by `make soak` (benchmarks/soak.py) and the 3-minute soak in `make test`
(tests/integration/test_soak.py). A sample holds the process's RSS, open file descriptors and
threads (psutil) and the size of its `/metrics` exposition.

Two verdicts, both after a warm-up (the first fifth of the run, at least one minute when the
run is long enough):

- `verdict` (`make soak`): the RSS peak within `tolerance` of the RSS at the end of the warm-up;
- `slope_verdict` (the test): a least-squares line through RSS over time after the warm-up,
  whose projected growth over the whole run stays within `tolerance` of the level at the end of
  the warm-up (robust to single spikes, which a peak is not).

Both require no growth in fds, threads or `/metrics` series: their median over the last quarter
of the samples after the warm-up against their median over the first quarter (a single
connection in flight moves the fd count by one).
"""

from __future__ import annotations

import statistics
import urllib.request
from dataclasses import dataclass

import psutil


@dataclass
class Sample:
    elapsed_s: float
    requests: int
    rss_bytes: int
    fds: int
    threads: int
    metrics_bytes: int
    series: int
    """Samples in `/metrics` (its byte size also moves with the digits of growing counters)."""


def scrape(metrics_url: str, timeout: float = 10.0) -> bytes:
    """The `/metrics` exposition text."""
    with urllib.request.urlopen(metrics_url, timeout=timeout) as r:
        body: bytes = r.read()
    return body


def series_count(text: bytes) -> int:
    """Sample lines in an exposition text."""
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def requests_served(text: bytes) -> int:
    """The sum of `infersight_requests_total` in an exposition text."""
    return round(
        sum(
            float(line.rsplit(None, 1)[-1])
            for line in text.splitlines()
            if line.startswith((b"infersight_requests_total{", b"infersight_requests_total "))
        )
    )


def snapshot(
    pid: int,
    metrics_url: str,
    elapsed: float,
    requests: int | None = None,
    timeout: float = 10.0,
) -> Sample:
    """Sample the process, then scrape `/metrics` as Prometheus would (in that order: the
    scrape's own connection, maybe not yet closed on the server's side, is not counted).
    `requests` defaults to the requests the sidecar counted."""
    proc = psutil.Process(pid)
    rss, fds, threads = proc.memory_info().rss, proc.num_fds(), proc.num_threads()
    text = scrape(metrics_url, timeout)
    return Sample(
        elapsed_s=round(elapsed, 1),
        requests=requests_served(text) if requests is None else requests,
        rss_bytes=rss,
        fds=fds,
        threads=threads,
        metrics_bytes=len(text),
        series=series_count(text),
    )


def describe(s: Sample) -> str:
    """One sample as a progress line."""
    return (
        f"  {s.elapsed_s:6.0f} s  {s.requests:9d} requests  RSS {s.rss_bytes / 2**20:6.1f} "
        f"MiB  fds {s.fds:3d}  threads {s.threads:3d}  /metrics {s.series} series "
        f"{s.metrics_bytes} B"
    )


def warmup_seconds(total: float) -> float:
    """The first fifth of the run, at least a minute when the run is long enough (at most
    half of it)."""
    return min(max(total / 5, min(60.0, total / 2)), total / 2)


def after_warmup(samples: list[Sample]) -> list[Sample]:
    """The samples from the end of the warm-up on (the first of them is the baseline)."""
    warm = warmup_seconds(samples[-1].elapsed_s)
    base = next(s for s in samples if s.elapsed_s >= warm)
    return [s for s in samples if s.elapsed_s >= base.elapsed_s]


def counts_flat(
    after: list[Sample], allowance: dict[str, float] | None = None
) -> tuple[bool, list[str]]:
    """Open fds, threads and `/metrics` series: no growth from the first to the last quarter
    (beyond `allowance`, by attribute name: e.g. one fd for a connection that comes and goes)."""
    quarter = max(1, len(after) // 4)
    early, late = after[:quarter], after[-quarter:]
    allowance = allowance or {}
    ok = True
    findings = []
    for attr, label in (("fds", "open fds"), ("threads", "threads"), ("series", "/metrics series")):
        first = statistics.median(getattr(s, attr) for s in early)
        last = statistics.median(getattr(s, attr) for s in late)
        extra = allowance.get(attr, 0)
        grew = last > first + extra
        findings.append(
            f"{label}: median {first:g} in the first quarter after warm-up, {last:g} in the last"
            + (f" (allowance {extra:g})" if extra else "")
            + (": GROWTH" if grew else "")
        )
        ok = ok and not grew
    return ok, findings


def verdict(
    samples: list[Sample], tolerance: float, allowance: dict[str, float] | None = None
) -> tuple[bool, list[str]]:
    """Judge the samples after the warm-up by the RSS peak (counts as in `counts_flat`);
    returns (ok, findings)."""
    after = after_warmup(samples)
    base = after[0]
    findings = []
    ok = True
    peak = max(s.rss_bytes for s in after)
    growth = peak / base.rss_bytes - 1
    final = after[-1].rss_bytes / base.rss_bytes - 1
    line = (
        f"RSS after warm-up ({base.elapsed_s:.0f} s) {base.rss_bytes / 2**20:.1f} MiB, "
        f"peak {peak / 2**20:.1f} MiB ({growth:+.1%}), final {after[-1].rss_bytes / 2**20:.1f} "
        f"MiB ({final:+.1%}); tolerance {tolerance:.0%}"
    )
    if growth > tolerance:
        ok = False
        line += ": GROWTH"
    findings.append(line)
    flat, more = counts_flat(after, allowance)
    return ok and flat, findings + more


def least_squares(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through the points."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0, my
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


@dataclass
class RssTrend:
    warmup_s: float
    level_bytes: float
    """The fitted RSS at the end of the warm-up."""
    slope_bytes_per_s: float
    projected_growth: float
    """The slope times the whole run's duration, as a share of `level_bytes`."""
    first_bytes: int
    last_bytes: int


def rss_trend(samples: list[Sample]) -> RssTrend:
    """The least-squares RSS line after the warm-up, projected over the whole run."""
    after = after_warmup(samples)
    xs = [s.elapsed_s for s in after]
    slope, intercept = least_squares(xs, [float(s.rss_bytes) for s in after])
    level = intercept + slope * xs[0]
    run = samples[-1].elapsed_s
    return RssTrend(
        warmup_s=xs[0],
        level_bytes=level,
        slope_bytes_per_s=slope,
        projected_growth=slope * run / level,
        first_bytes=after[0].rss_bytes,
        last_bytes=after[-1].rss_bytes,
    )


def slope_verdict(
    samples: list[Sample], tolerance: float, allowance: dict[str, float] | None = None
) -> tuple[bool, list[str]]:
    """Judge the samples after the warm-up by the RSS slope; returns (ok, findings)."""
    t = rss_trend(samples)
    run = samples[-1].elapsed_s
    line = (
        f"RSS after warm-up ({t.warmup_s:.0f} s) {t.level_bytes / 2**20:.1f} MiB (fitted), "
        f"slope {t.slope_bytes_per_s / 2**10:+.1f} KiB/s, projected over {run:.0f} s "
        f"{t.projected_growth:+.2%} (first {t.first_bytes / 2**20:.1f} MiB, last "
        f"{t.last_bytes / 2**20:.1f} MiB); tolerance {tolerance:.0%}"
    )
    ok = t.projected_growth <= tolerance
    if not ok:
        line += ": GROWTH"
    flat, more = counts_flat(after_warmup(samples), allowance)
    return ok and flat, [line, *more]
