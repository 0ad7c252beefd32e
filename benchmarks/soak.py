"""`make soak`: InferSight under steady load for a bounded time; does anything grow?

Starts the stub V2 upstream and one sidecar with full monitoring (validation, metrics, drift
windows and cycles, feedback store, request logs to a file), then drives wrk for `--minutes`
in 10-second segments with 400 distinct requests (1 to 32 rows; some with unknown categories,
out-of-range and missing values), scraping `/metrics` after every segment as Prometheus would.
After each segment it samples the sidecar's RSS, open file descriptors, threads and the
`/metrics` size.

Verdict (benchmarks/soak_check.py), after the warm-up (the first fifth of the run, at least one
minute when the run is long enough): RSS within `--rss-tolerance` (default 5 %) of its value at
the end of the warm-up, and no growth in file descriptors, threads or `/metrics` series (their
median over the last quarter of the run against their median over the first quarter after the
warm-up; a single connection in flight moves the fd count by one). Exit status 1 otherwise.
Writes markdown and JSON into benchmarks/results/.

    python -m benchmarks.soak [--minutes 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.run import (
    RESULTS,
    ROOT,
    V2_TYPES,
    build_profile,
    free_port,
    process,
    taskset,
    wait_http,
)
from benchmarks.soak_check import Sample, describe, snapshot, verdict

SEGMENT_SECONDS = 10.0


def request_bodies(n: int, seed: int = 7) -> list[bytes]:
    """`n` distinct V2 requests of 1-32 demo rows, about one in ten with a value the profile
    has not seen (new category, out-of-range number, missing value)."""
    sys.path.insert(0, str(ROOT))
    from app.demo.data import FEATURES, generate

    rng = random.Random(seed)
    bodies = []
    for i in range(n):
        rows = rng.choice([1, 1, 1, 2, 4, 8, 32])
        cols = generate(rows, seed=seed * 1000 + i)
        cols["monthly_income"] = [3000.0 if v is None else v for v in cols["monthly_income"]]
        if rng.random() < 0.1:
            cols["employment"][0] = f"gig-{rng.randrange(10**6)}"
        if rng.random() < 0.1:
            cols["age"][0] = rng.choice([-5, 140, 10**6])
        inputs = [
            {"name": f, "shape": [rows], "datatype": V2_TYPES.get(f, "BYTES"), "data": cols[f]}
            for f in FEATURES
        ]
        bodies.append(json.dumps({"parameters": {"content_type": "pd"}, "inputs": inputs}).encode())
    return bodies


def wrk_script(bodies_file: Path, script: Path) -> None:
    """A wrk script that sends the bodies in turn (one per line of `bodies_file`)."""
    script.write_text(
        "local bodies = {}\n"
        f'for line in io.lines("{bodies_file}") do bodies[#bodies + 1] = line end\n'
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        '  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[i])\n'
        "end\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rss-tolerance", type=float, default=0.05)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk (Debian)", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="infersight-soak-"))
    profile = build_profile(work)
    bodies_file = work / "bodies.jsonl"
    bodies_file.write_bytes(b"\n".join(request_bodies(400)) + b"\n")
    script = work / "soak.lua"
    wrk_script(bodies_file, script)
    up_port, side_port = free_port(), free_port()
    env = {
        **os.environ,
        "INFERSIGHT_LOGGING__SINK": str(work / "requests.log"),
        "INFERSIGHT_FEEDBACK__STORE": f"sqlite:{work / 'feedback.db'}",
        "INFERSIGHT_DRIFT__INTERVAL_SECONDS": "10",
    }
    py = sys.executable
    samples: list[Sample] = []
    with (
        process([*taskset(1), py, "-m", "benchmarks.stub_server", "--port", str(up_port)],
                work / "stub.log"),
        process([*taskset(1), py, "-m", "app.cli", "serve", "--upstream",
                 f"http://127.0.0.1:{up_port}", "--protocol", "v2", "--profile", str(profile),
                 "--port", str(side_port)], work / "sidecar.log", env) as side,
    ):  # fmt: skip
        wait_http(f"http://127.0.0.1:{side_port}/readyz")
        base = f"http://127.0.0.1:{side_port}"
        started = time.monotonic()
        done = 0
        segments = max(2, round(args.minutes * 60 / SEGMENT_SECONDS))
        for _ in range(segments):
            out = subprocess.run(
                [*taskset(0), "wrk", "-t1", f"-c{args.connections}",
                 f"-d{SEGMENT_SECONDS:g}s", "-s", str(script), f"{base}/v2/models/loan/infer"],
                capture_output=True, text=True, timeout=SEGMENT_SECONDS + 30, check=True,
            ).stdout  # fmt: skip
            done += int(out.split(" requests in ")[0].split()[-1])
            s = snapshot(side.pid, f"{base}/metrics", time.monotonic() - started, done)
            samples.append(s)
            print(describe(s), flush=True)
    # The load stops between segments: a connection still closing moves the fd count by one.
    ok, findings = verdict(samples, args.rss_tolerance, {"fds": 1})
    stamp = time.strftime("%Y%m%d-%H%M%S")
    md = "\n".join(
        [
            f"# Soak: {args.minutes:g} min, {args.connections} connections, stub V2 upstream",
            "",
            f"{samples[-1].requests} requests, "
            f"{samples[-1].requests / samples[-1].elapsed_s:.0f} req/s on average.",
            "",
            *(f"- {f}" for f in findings),
            "",
            f"Verdict: {'flat' if ok else 'GROWTH'}",
            "",
        ]
    )
    (RESULTS / f"soak-{stamp}.md").write_text(md)
    (RESULTS / f"soak-{stamp}.json").write_text(
        json.dumps(
            {"samples": [asdict(s) for s in samples], "ok": ok, "findings": findings}, indent=2
        )
    )
    print(md)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
