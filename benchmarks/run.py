"""`make bench`: the sidecar's overhead against calling the model server directly, same run.

Starts an upstream (a fast stub server without a model, answering V2, V1 and MLflow paths), a
bare aiohttp forwarding proxy as reference, and InferSight with full monitoring (validation,
metrics, drift windows, feedback store, request logs to a file), one sidecar per protocol. Drives wrk in alternating rounds — direct,
bare proxy, InferSight — and reports medians.

CPU layout (fixed so runs compare): wrk on CPU 0; the upstream and the proxy under test
share CPU 1, as a sidecar shares its pod's CPU with the model server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
V2_TYPES = {"age": "INT64", "monthly_income": "FP64", "loan_amount": "FP64", "has_mortgage": "BOOL"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def taskset(cpu: int) -> list[str]:
    return (
        ["taskset", "-c", str(cpu)]
        if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > 1
        else []
    )  # type: ignore[operator]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


@contextlib.contextmanager
def process(
    cmd: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def v2_body(rows: int) -> bytes:
    sys.path.insert(0, str(ROOT))
    from app.demo.data import FEATURES, generate

    cols = generate(rows, seed=99)
    cols["monthly_income"] = [3000.0 if v is None else v for v in cols["monthly_income"]]
    return json.dumps(
        {
            "id": "bench",
            "parameters": {"content_type": "pd"},
            "inputs": [
                {"name": f, "shape": [rows], "datatype": V2_TYPES.get(f, "BYTES"), "data": cols[f]}
                for f in FEATURES
            ],
        }
    ).encode()


INFER_PATHS = {
    "v2": "/v2/models/loan/infer",
    "v1": "/v1/models/loan:predict",
    "mlflow": "/invocations",
}
READY_PATHS = {"v2": "/v2/health/ready", "v1": "/v1/models/loan", "mlflow": "/ping"}


def request_body(protocol: str, rows: int) -> bytes:
    """One request of `rows` demo rows in the protocol's usual shape."""
    if protocol == "v2":
        return v2_body(rows)
    from app.demo.data import FEATURES, generate

    cols = generate(rows, seed=99)
    cols["monthly_income"] = [3000.0 if v is None else v for v in cols["monthly_income"]]
    records = [{f: cols[f][i] for f in FEATURES} for i in range(rows)]
    if protocol == "v1":
        return json.dumps({"instances": records}).encode()
    split = {"columns": FEATURES, "data": [[r[f] for f in FEATURES] for r in records]}
    return json.dumps({"dataframe_split": split}).encode()


def build_profile(workdir: Path) -> Path:
    from app.demo.data import FEATURES, generate
    from app.monitoring.profile import ModelInfo, save_profile
    from app.monitoring.profile_builder import build_profile as build

    cols = generate(3000, seed=0)
    dtypes = {
        "age": "int64",
        "monthly_income": "float64",
        "loan_amount": "float64",
        "has_mortgage": "bool",
    }
    cols = {f: cols[f] for f in [*FEATURES, "default"]}
    cols["predicted"] = cols["default"]
    profile, _ = build(
        cols, {**dtypes, "default": "int64", "predicted": "int64"}, target="default",
        prediction="predicted", output_name="predict", model=ModelInfo(name="loan", version="v1"),
        data_hash="bench",
    )  # fmt: skip
    path = workdir / "profile.json"
    save_profile(profile, path)
    return path


@dataclass
class Round:
    protocol: str
    target: str
    connections: int
    rows: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_seconds: float
    """CPU seconds of the proxy process per request."""


_LAT = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(
    url: str, body_file: Path, connections: int, seconds: float
) -> tuple[float, float, float, int]:
    script = body_file.with_suffix(".lua")
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    cmd = [
        *taskset(0),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {q: _ms(v, u) for q, v, u in _LAT.findall(out)}
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return rps, lat.get("50", float("nan")), lat.get("99", float("nan")), errors


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per cell")
    parser.add_argument("--connections", default="1,64")
    parser.add_argument("--rows", default="1,32")
    parser.add_argument("--protocols", default="v2", help="v2,v1,mlflow (one sidecar each)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk (Debian)", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    conns = [int(c) for c in args.connections.split(",")]
    row_sizes = [int(r) for r in args.rows.split(",")]
    work = Path(tempfile.mkdtemp(prefix="infersight-bench-"))
    profile = build_profile(work)
    up_port, bare_port = free_port(), free_port()
    py = sys.executable
    env = {**os.environ, "INFERSIGHT_LOGGING__SINK": str(work / "requests.log")}
    results: list[Round] = []
    rss: dict[str, int] = {}
    protocols = [p for p in args.protocols.split(",") if p]
    with (
        process([*taskset(1), py, "-m", "benchmarks.stub_server", "--port", str(up_port)], work / "stub.log"),
        process([*taskset(1), py, "-m", "benchmarks.bare_proxy", "--port", str(bare_port),
                 "--upstream", f"http://127.0.0.1:{up_port}"], work / "bare.log") as bare,
    ):  # fmt: skip
        for protocol in protocols:
            side_port = free_port()
            with process(
                [*taskset(1), py, "-m", "app.cli", "serve", "--upstream", f"http://127.0.0.1:{up_port}",
                 "--protocol", protocol, "--profile", str(profile), "--port", str(side_port)],
                work / f"sidecar-{protocol}.log", env,
            ) as side:  # fmt: skip
                ready = READY_PATHS[protocol]
                for port, path in ((up_port, ready), (bare_port, ready), (side_port, "/readyz")):
                    wait_http(f"http://127.0.0.1:{port}{path}")
                path = INFER_PATHS[protocol]
                targets = {
                    "direct": (f"http://127.0.0.1:{up_port}{path}", None),
                    "bare proxy": (f"http://127.0.0.1:{bare_port}{path}", bare.pid),
                    "infersight": (f"http://127.0.0.1:{side_port}{path}", side.pid),
                }
                results += run_cells(protocol, targets, work, row_sizes, conns, args)
                rss[f"infersight {protocol}"] = rss_bytes(side.pid)
        rss["bare proxy"] = rss_bytes(bare.pid)
    report = summarize(results, rss)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"bench-{stamp}.json").write_text(
        json.dumps(
            {"rounds": [asdict(r) for r in results], "summary": report, "rss_bytes": rss}, indent=2
        )
    )
    md = to_markdown(report, rss, args)
    (RESULTS / f"bench-{stamp}.md").write_text(md)
    print(md)
    return 0


def run_cells(
    protocol: str,
    targets: dict[str, tuple[str, int | None]],
    work: Path,
    row_sizes: list[int],
    conns: list[int],
    args: argparse.Namespace,
) -> list[Round]:
    """Alternating rounds (direct, bare proxy, InferSight) for every rows x connections cell."""
    results: list[Round] = []
    for rows in row_sizes:
        body = work / f"body-{protocol}-{rows}.json"
        body.write_bytes(request_body(protocol, rows))
        for c in conns:
            for _ in range(args.rounds):
                for name, (url, pid) in targets.items():
                    before = cpu_seconds(pid) if pid else 0.0
                    rps, p50, p99, errors = run_wrk(url, body, c, args.seconds)
                    used = (cpu_seconds(pid) - before) if pid else 0.0
                    per_request = used / max(1.0, rps * args.seconds)
                    results.append(
                        Round(protocol, name, c, rows, rps, p50, p99, errors, per_request)
                    )
                    print(
                        f"  {protocol:6s} {name:11s} c={c:<3d} rows={rows:<3d} {rps:9.0f} req/s"
                        f"  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  errors {errors}",
                        flush=True,
                    )
    return results


def summarize(results: list[Round], rss: dict[str, int]) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    keys = sorted({(r.protocol, r.rows, r.connections) for r in results})
    for protocol, rows, c in keys:

        def med(
            target: str, attr: str, protocol: str = protocol, rows: int = rows, c: int = c
        ) -> float:
            return statistics.median(
                getattr(r, attr)
                for r in results
                if (r.protocol, r.target, r.rows, r.connections) == (protocol, target, rows, c)
            )

        direct, bare, side = (med(t, "rps") for t in ("direct", "bare proxy", "infersight"))
        bare_cpu = med("bare proxy", "cpu_seconds")
        side_cpu = med("infersight", "cpu_seconds")
        cells.append({
            "protocol": protocol, "rows": rows, "connections": c,
            "direct_rps": direct, "bare_rps": bare, "infersight_rps": side,
            "ratio_vs_direct": side / direct if direct else float("nan"),
            "ratio_vs_bare": side / bare if bare else float("nan"),
            "bare_ratio_vs_direct": bare / direct if direct else float("nan"),
            "added_p50_ms": med("infersight", "p50_ms") - med("direct", "p50_ms"),
            "added_p99_ms": med("infersight", "p99_ms") - med("direct", "p99_ms"),
            # CPU per request: seconds of the process over the round / requests in the round.
            "cpu_us_per_request_over_bare": (side_cpu - bare_cpu) * 1e6,
            "errors": sum(
                r.errors for r in results if (r.protocol, r.rows, r.connections) == (protocol, rows, c)
            ),
        })  # fmt: skip
    return cells


def to_markdown(cells: list[dict[str, Any]], rss: dict[str, int], args: argparse.Namespace) -> str:
    lines = [
        f"# InferSight overhead — stub upstream, {args.rounds} x {args.seconds:g}s alternating rounds (medians)",
        "",
        "| protocol | rows | conns | direct req/s | bare proxy | InferSight | vs direct | vs bare | +p50 ms | +p99 ms | CPU µs/req over bare | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c['protocol']} | {c['rows']} | {c['connections']} | {c['direct_rps']:.0f} | {c['bare_rps']:.0f} | {c['infersight_rps']:.0f} | "
            f"{c['ratio_vs_direct']:.2f}x | {c['ratio_vs_bare']:.2f}x | {c['added_p50_ms']:.2f} | {c['added_p99_ms']:.2f} | "
            f"{c['cpu_us_per_request_over_bare']:.0f} | {c['errors']} |"
        )
    lines += [
        "",
        "RSS after the run: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in rss.items()),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
