"""Scale limits of one sidecar: `/metrics` render time and memory per feature.

Builds a profile of 100 features (50 numeric with decile bins, 50 categorical with 10 values),
creates the real app on a fresh registry, serves 5,000 rows per feature through the monitoring
core (validation, bins, windows, drift metrics), then times the sidecar's `/metrics` rendering
against prometheus_client's `generate_latest` (median of 30 each), the longest event-loop stall
during a scrape rendered on the loop and off it, and reports the exposition size, the series
count and the memory the windows hold per feature.

    python -m benchmarks.scale_limits [--features 100] [--rows 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from app.config import DriftSettings, FeedbackSettings, Settings, UpstreamSettings
from app.main import create_app
from app.monitoring.batch import Batch
from app.monitoring.profile import ModelInfo
from app.monitoring.profile_builder import BuildOptions, build_profile
from app.telemetry.exposition import Exposition


def profile_and_traffic(features: int, rows: int) -> tuple[object, dict[str, list[object]]]:
    rng = np.random.default_rng(0)
    train: dict[str, list[object]] = {}
    dtypes: dict[str, str] = {}
    for i in range(features):
        name = f"f{i:03d}"
        if i % 2:
            train[name] = [f"c{v}" for v in rng.integers(0, 10, 20_000)]
            dtypes[name] = "object"
        else:
            train[name] = rng.normal(i, 1 + i % 5, 20_000).tolist()
            dtypes[name] = "float64"
    train["score"] = rng.uniform(0, 1, 20_000).tolist()
    profile, _ = build_profile(
        train, {**dtypes, "score": "float64"}, target=None, prediction="score",
        output_name="predict", model=ModelInfo(name="scale", version="v1"), data_hash="bench",
        options=BuildOptions(calibration_rows=0),
    )  # fmt: skip
    serve = {k: v[:rows] for k, v in train.items() if k != "score"}
    return profile, serve


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--rows", type=int, default=5000)
    args = parser.parse_args(argv)
    profile, serve = profile_and_traffic(args.features, args.rows)
    registry = CollectorRegistry()
    settings = Settings(
        upstream=UpstreamSettings(url="http://127.0.0.1:9"),
        drift=DriftSettings(window_rows=args.rows, interval_seconds=3600),
        feedback=FeedbackSettings(store="sqlite::memory:"),
    )
    app = create_app(settings, registry=registry, profiles={"scale": profile})  # type: ignore[dict-item]
    model = app.state.infersight.router.models["scale"]
    assert model.validator is not None
    assert model.stats is not None
    assert model.windows is not None
    rss_before = _rss()
    for start in range(0, args.rows, 500):
        batch = Batch(500, {k: v[start : start + 500] for k, v in serve.items()})
        report = model.validator.validate(batch)
        model.stats.observe_inputs(report)
        model.windows.observe_inputs(report.columns, batch.columns)
    window_bytes = model.windows.nbytes
    rss_after = _rss()
    exposition = Exposition(registry)
    print(f"{args.features} features x {args.rows} rows")
    for label, render in (
        ("/metrics render (InferSight)", exposition.render),
        ("generate_latest (reference)", lambda: generate_latest(registry)),
    ):
        render()  # warm
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            text = render()
            times.append(time.perf_counter() - t0)
        series = sum(1 for line in text.decode().splitlines() if line and line[0] != "#")
        print(
            f"{label}: median {statistics.median(times) * 1000:.1f} ms, "
            f"max {max(times) * 1000:.1f} ms; {len(text) / 1024:.0f} KiB, {series} series"
        )
    for label, scrape in (
        ("on the loop", _sync(exposition.render)),
        ("off the loop", exposition.render_off_loop),
    ):
        gaps = [await longest_loop_gap(scrape) for _ in range(10)]
        print(f"longest event-loop stall during a scrape, {label}: "
              f"{statistics.median(gaps) * 1000:.1f} ms (median of 10)")  # fmt: skip
    print(
        f"windows: {window_bytes / 2**20:.1f} MiB ({window_bytes / args.features / 1024:.0f} KiB "
        f"per feature at {args.rows} rows); RSS grew {(rss_after - rss_before) / 2**20:.1f} MiB "
        "while filling them"
    )
    return 0


def _sync(render: Callable[[], bytes]) -> Callable[[], Awaitable[bytes]]:
    async def scrape() -> bytes:
        return render()

    return scrape


async def longest_loop_gap(scrape: Callable[[], Awaitable[bytes]]) -> float:
    """The longest time the event loop could not run anything else while `scrape` ran."""
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await scrape()
    done = True
    await task
    return max(gaps)


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
