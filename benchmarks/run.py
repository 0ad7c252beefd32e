"""`make bench`: the sidecar's overhead against calling the model server directly, same run.

Two upstreams in turn: a fast stub server without a model (answering V2, V1 and MLflow paths),
then a real model server (MLServer with a scikit-learn model when its virtualenv is built, else
the demo's model server). In front of each: a bare aiohttp forwarding proxy as reference, and
InferSight with full monitoring (validation, metrics, drift windows, feedback store, request
logs to a file), one sidecar per protocol. Drives wrk in alternating rounds (direct, bare proxy,
InferSight) and reports medians. In front of MLServer, ModelInfer over gRPC too: direct against
InferSight's gRPC port and a bare grpc.aio forwarder (`benchmarks/bare_grpc_proxy.py`), driven
by `benchmarks/grpc_load.py`.

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
WARMUP_SECONDS = 2.0
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


def wait_port(port: int, timeout: float = 30) -> None:
    """Until something accepts TCP connections on loopback `port`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port}") from None
            time.sleep(0.1)


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
    upstream: str
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
        "--timeout",
        "10s",  # a slow model at 64 connections queues for seconds: that is latency, not error
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


def pin_group(pgid: int, cpu: int) -> None:
    """Pin every thread of every process in a process group to one CPU (servers started by
    the test harness run in their own group)."""
    if not taskset(cpu):
        return
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            subprocess.run(["taskset", "-a", "-cp", str(cpu), stat.parent.name],
                           capture_output=True, check=False)  # fmt: skip


@contextlib.contextmanager
def model_server(work: Path) -> Iterator[tuple[str, str, str | None]]:
    """MLServer (scikit-learn, tuned as its docs advise for benchmarks: debug off,
    parallel_workers 0) when its virtualenv is built (`make test` builds it), otherwise the
    demo's own model server. Yields (label, base URL, gRPC HOST:PORT or None)."""
    sys.path.insert(0, str(ROOT))
    from tests.integration.servers.harness import server_venv_python, start_mlserver

    if server_venv_python("mlserver") is not None:
        # The trained model is kept between runs (.cache/ is ignored by git): training it takes
        # longer than a round.
        with start_mlserver(ROOT / ".cache" / "bench") as server:
            pin_group(server.process.pid, 1)
            yield "MLServer", server.url, server.grpc_address
        return
    print("  (MLServer's virtualenv is not built: using the demo model server)", flush=True)
    port = free_port()
    cmd = [*taskset(1), sys.executable, "-m", "app.demo.model_server", "--port", str(port)]
    with process(cmd, work / "demo-model.log"):
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=120)
        yield "demo model", f"http://127.0.0.1:{port}", None


def sidecar_env(work: Path, tag: str) -> dict[str, str]:
    """The environment of a benchmarked sidecar: request lines and the feedback store in
    `work`, named by `tag`."""
    return {
        **os.environ,
        "INFERSIGHT_LOGGING__SINK": str(work / f"requests-{tag}.log"),
        "INFERSIGHT_FEEDBACK__STORE": f"sqlite:{work / f'feedback-{tag}.db'}",
    }


def bench_upstream(
    upstream: str,
    up_url: str,
    protocols: list[str],
    row_sizes: list[int],
    conns: list[int],
    profile: Path,
    work: Path,
    args: argparse.Namespace,
    rss: dict[str, int],
) -> list[Round]:
    """A bare proxy and one sidecar per protocol in front of `up_url`; alternating rounds."""
    py = sys.executable
    env = sidecar_env(work, upstream)
    results: list[Round] = []
    bare_port = free_port()
    tag = upstream.replace(" ", "-").lower()
    with process(
        [*taskset(1), py, "-m", "benchmarks.bare_proxy", "--port", str(bare_port),
         "--upstream", up_url], work / f"bare-{tag}.log",
    ) as bare:  # fmt: skip
        for protocol in protocols:
            side_port = free_port()
            with process(
                [*taskset(1), py, "-m", "app.cli", "serve", "--upstream", up_url,
                 "--protocol", protocol, "--profile", str(profile), "--port", str(side_port)],
                work / f"sidecar-{tag}-{protocol}.log", env,
            ) as side:  # fmt: skip
                ready = READY_PATHS[protocol]
                wait_http(f"{up_url}{ready}")
                wait_http(f"http://127.0.0.1:{bare_port}{ready}")
                wait_http(f"http://127.0.0.1:{side_port}/readyz")
                path = INFER_PATHS[protocol]
                targets = {
                    "direct": (f"{up_url}{path}", None),
                    "bare proxy": (f"http://127.0.0.1:{bare_port}{path}", bare.pid),
                    "infersight": (f"http://127.0.0.1:{side_port}{path}", side.pid),
                }
                results += run_cells(upstream, protocol, targets, work, row_sizes, conns, args)
                rss[f"InferSight ({upstream}, {protocol})"] = rss_bytes(side.pid)
        rss[f"bare proxy ({upstream})"] = rss_bytes(bare.pid)
    return results


def run_grpc_load(target: str, rows: int, connections: int, seconds: float) -> dict[str, float]:
    """One round of `benchmarks.grpc_load` (pinned to CPU 0, like wrk)."""
    cmd = [*taskset(0), sys.executable, "-m", "benchmarks.grpc_load", "--target", target,
           "--rows", str(rows), "--connections", str(connections), "--seconds", str(seconds)]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def bench_grpc(
    upstream: str,
    up_url: str,
    grpc_address: str,
    row_sizes: list[int],
    conns: list[int],
    profile: Path,
    work: Path,
    args: argparse.Namespace,
    rss: dict[str, int],
) -> list[Round]:
    """ModelInfer over gRPC: direct, a bare grpc.aio forwarder and InferSight's gRPC port, in
    alternating rounds."""
    env = sidecar_env(work, "grpc")
    port, grpc_port, bare_port = free_port(), free_port(), free_port()
    results: list[Round] = []
    with process(
        [*taskset(1), sys.executable, "-m", "benchmarks.bare_grpc_proxy", "--port", str(bare_port),
         "--upstream", grpc_address],
        work / "bare-grpc.log",
    ) as bare, process(
        [*taskset(1), sys.executable, "-m", "app.cli", "serve", "--upstream", up_url,
         "--protocol", "v2", "--profile", str(profile), "--port", str(port),
         "--grpc-port", str(grpc_port), "--upstream-grpc", grpc_address],
        work / "sidecar-grpc.log", env,
    ) as side:  # fmt: skip
        wait_http(f"http://127.0.0.1:{port}/readyz")
        wait_port(bare_port)
        targets = {
            "direct": (grpc_address, None),
            "bare proxy": (f"127.0.0.1:{bare_port}", bare.pid),
            "infersight": (f"127.0.0.1:{grpc_port}", side.pid),
        }
        for rows in row_sizes:
            for target, _ in targets.values():
                run_grpc_load(target, rows, max(conns), WARMUP_SECONDS)
            for c in conns:
                for _ in range(args.rounds):
                    for name, (target, pid) in targets.items():
                        before = cpu_seconds(pid) if pid else 0.0
                        got = run_grpc_load(target, rows, c, args.seconds)
                        used = (cpu_seconds(pid) - before) if pid else 0.0
                        per_request = used / max(1.0, got["calls"])
                        results.append(
                            Round(upstream, "v2-grpc", name, c, rows, got["rps"], got["p50_ms"],
                                  got["p99_ms"], int(got["errors"]), per_request)
                        )  # fmt: skip
                        print(
                            f"  {upstream:10s} v2-grpc {name:11s} c={c:<3d} rows={rows:<3d} "
                            f"{got['rps']:9.0f} req/s  p50 {got['p50_ms']:7.2f} ms  "
                            f"p99 {got['p99_ms']:7.2f} ms  errors {int(got['errors'])}",
                            flush=True,
                        )
        rss[f"InferSight ({upstream}, v2-grpc)"] = rss_bytes(side.pid)
        rss[f"bare gRPC proxy ({upstream})"] = rss_bytes(bare.pid)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per cell")
    parser.add_argument("--connections", default="1,64")
    parser.add_argument("--rows", default="1,32")
    parser.add_argument("--protocols", default="v2", help="v2,v1,mlflow (one sidecar each)")
    parser.add_argument(
        "--model-rows",
        default="1",
        help="request sizes in front of the model server (V2); empty to skip the model server",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk (Debian)", file=sys.stderr)
        return 2
    began = time.monotonic()
    RESULTS.mkdir(parents=True, exist_ok=True)
    conns = [int(c) for c in args.connections.split(",")]
    row_sizes = [int(r) for r in args.rows.split(",")]
    model_rows = [int(r) for r in args.model_rows.split(",") if r]
    work = Path(tempfile.mkdtemp(prefix="infersight-bench-"))
    profile = build_profile(work)
    up_port = free_port()
    results: list[Round] = []
    rss: dict[str, int] = {}
    protocols = [p for p in args.protocols.split(",") if p]
    stub_cmd = [*taskset(1), sys.executable, "-m", "benchmarks.stub_server", "--port", str(up_port)]
    with process(stub_cmd, work / "stub.log"):
        stub_url = f"http://127.0.0.1:{up_port}"
        results += bench_upstream(
            "stub", stub_url, protocols, row_sizes, conns, profile, work, args, rss
        )
    if model_rows:
        with model_server(work) as (label, url, grpc_address):
            results += bench_upstream(
                label, url, ["v2"], model_rows, conns, profile, work, args, rss
            )
            if grpc_address is not None:
                results += bench_grpc(
                    label, url, grpc_address, model_rows, conns, profile, work, args, rss
                )
    report = summarize(results)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"bench-{stamp}.json").write_text(
        json.dumps(
            {"rounds": [asdict(r) for r in results], "summary": report, "rss_bytes": rss}, indent=2
        )
    )
    md = to_markdown(report, rss, args)
    md += f"\nRun took {time.monotonic() - began:.0f} s.\n"
    (RESULTS / f"bench-{stamp}.md").write_text(md)
    print(md)
    return 0


def run_cells(
    upstream: str,
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
        if rows == row_sizes[0] and upstream != "stub":  # a real model server warms up slowly
            for url, _ in targets.values():
                run_wrk(url, body, max(conns), WARMUP_SECONDS)
        for c in conns:
            for _ in range(args.rounds):
                for name, (url, pid) in targets.items():
                    before = cpu_seconds(pid) if pid else 0.0
                    rps, p50, p99, errors = run_wrk(url, body, c, args.seconds)
                    used = (cpu_seconds(pid) - before) if pid else 0.0
                    per_request = used / max(1.0, rps * args.seconds)
                    results.append(
                        Round(upstream, protocol, name, c, rows, rps, p50, p99, errors, per_request)
                    )
                    print(
                        f"  {upstream:10s} {protocol:6s} {name:11s} c={c:<3d} rows={rows:<3d} {rps:9.0f} req/s"
                        f"  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  errors {errors}",
                        flush=True,
                    )
    return results


def summarize(results: list[Round]) -> list[dict[str, Any]]:
    """One cell per upstream x protocol x rows x connections: medians over the rounds."""
    cells: list[dict[str, Any]] = []
    keys = list(dict.fromkeys((r.upstream, r.protocol, r.rows, r.connections) for r in results))
    for key in keys:
        same = [r for r in results if (r.upstream, r.protocol, r.rows, r.connections) == key]

        def med(target: str, attr: str, same: list[Round] = same) -> float:
            values = [getattr(r, attr) for r in same if r.target == target]
            return statistics.median(values) if values else float("nan")

        direct, bare, side = (med(t, "rps") for t in ("direct", "bare proxy", "infersight"))
        upstream, protocol, rows, c = key
        cells.append({
            "upstream": upstream, "protocol": protocol, "rows": rows, "connections": c,
            "direct_rps": direct, "bare_rps": bare, "infersight_rps": side,
            "ratio_vs_direct": side / direct if direct else float("nan"),
            "ratio_vs_bare": side / bare if bare else float("nan"),
            "bare_ratio_vs_direct": bare / direct if direct else float("nan"),
            "added_p50_ms": med("infersight", "p50_ms") - med("direct", "p50_ms"),
            "added_p99_ms": med("infersight", "p99_ms") - med("direct", "p99_ms"),
            "bare_added_p50_ms": med("bare proxy", "p50_ms") - med("direct", "p50_ms"),
            # CPU per request: seconds of the process over the round / requests in the round.
            "infersight_cpu_us_per_request": med("infersight", "cpu_seconds") * 1e6,
            "bare_cpu_us_per_request": med("bare proxy", "cpu_seconds") * 1e6,
            "cpu_us_per_request_over_bare": (
                med("infersight", "cpu_seconds") - med("bare proxy", "cpu_seconds")
            ) * 1e6,
            "errors": sum(r.errors for r in same),
        })  # fmt: skip
    return cells


def to_markdown(cells: list[dict[str, Any]], rss: dict[str, int], args: argparse.Namespace) -> str:
    lines = [
        f"# InferSight overhead — {args.rounds} x {args.seconds:g} s alternating rounds (medians)",
        "",
        "| upstream | protocol | rows | conns | direct req/s | bare proxy | InferSight | vs direct | vs bare | bare vs direct | +p50 ms | +p99 ms | CPU µs/req | over bare | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip

    def f(value: float, spec: str, suffix: str = "") -> str:
        return "n/a" if value != value else f"{value:{spec}}{suffix}"  # NaN: no bare for gRPC

    for c in cells:
        lines.append(
            f"| {c['upstream']} | {c['protocol']} | {c['rows']} | {c['connections']} | "
            f"{c['direct_rps']:.0f} | {f(c['bare_rps'], '.0f')} | {c['infersight_rps']:.0f} | "
            f"{c['ratio_vs_direct']:.2f}x | {f(c['ratio_vs_bare'], '.2f', 'x')} | "
            f"{f(c['bare_ratio_vs_direct'], '.2f', 'x')} | {c['added_p50_ms']:.2f} | "
            f"{c['added_p99_ms']:.2f} | {c['infersight_cpu_us_per_request']:.0f} | "
            f"{f(c['cpu_us_per_request_over_bare'], '+.0f')} | {c['errors']} |"
        )
    lines += [
        "",
        "Added latency is InferSight's minus direct. CPU µs/req is the InferSight process's CPU "
        "time per request (all threads); over bare is the same minus the bare proxy's.",
        "",
        "RSS after the run: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in rss.items()),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
