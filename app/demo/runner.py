"""`infersight demo`: train the demo model, build its profile, serve it behind the sidecar and
play traffic scenarios while the dashboard shows what InferSight sees.

Everything listens on 127.0.0.1. The model server and the shadow candidate's server run on
background threads of this process; the sidecar is a subprocess (`python -m app.cli serve ...`),
always terminated on the way out. The sidecar runs with every lifecycle monitor on: predictions
kept for ground-truth feedback (in memory), an accuracy bound, parity probes of the profile's
golden rows, and the candidate as its shadow. While the scenarios play, the true labels of the
answered rows go back to `POST /feedback` a few seconds later (`app.demo.feedback`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

import aiohttp
import orjson
from rich.console import Console, RenderableType
from sklearn.pipeline import Pipeline

from app.demo.dashboard import Dashboard, ScenarioResult, summary_table
from app.demo.data import DTYPES as DATA_DTYPES
from app.demo.data import FEATURES, TARGET, generate, rows, write_csv
from app.demo.feedback import FEEDBACK_DELAY_SECONDS, FeedbackConfig, FeedbackSender, FeedbackStats
from app.demo.model import (
    CANDIDATE_VERSION,
    GOOD_VERSION,
    MODEL_NAME,
    predict,
    train,
    train_candidate,
)
from app.demo.model_server import BackgroundServer, candidate_state, create_app, demo_state
from app.demo.scenarios import SCENARIOS, Scenario, plan
from app.demo.traffic import RowSource, TrafficConfig, TrafficStats, encode_request, run_traffic
from app.monitoring.profile import ModelInfo, save_profile
from app.monitoring.profile_builder import build_profile

HOST = "127.0.0.1"
TRAIN_ROWS = 5000
PREDICTION_COLUMN = "prediction"
OUTPUT_NAME = "predict"
READY_TIMEOUT_SECONDS = 60.0
DEMO_DRIFT = {"INTERVAL_SECONDS": "3", "WINDOW_ROWS": "1200", "MIN_ROWS": "300"}
"""Drift settings for the demo's short scenarios (override with INFERSIGHT_DRIFT__* variables)."""
GOLDEN_ROWS = 20
"""Training rows (with the model's outputs) kept in the demo profile for parity probes."""
ACCURACY_BOUND = 0.7
"""`feedback.thresholds.accuracy`: the good model scores ~0.81 on the demo data, the buggy ~0.19."""
DEMO_LIFECYCLE = {
    "INFERSIGHT_FEEDBACK__STORE": "sqlite::memory:",
    "INFERSIGHT_FEEDBACK__THRESHOLDS": orjson.dumps({"accuracy": ACCURACY_BOUND}).decode(),
    "INFERSIGHT_FEEDBACK__WINDOW_ROWS": "500",
    "INFERSIGHT_PARITY__INTERVAL_SECONDS": "5",
    "INFERSIGHT_LIFECYCLE__METADATA_INTERVAL_SECONDS": "5",
}
"""Lifecycle settings of the demo's sidecar (each overridable by the same variable): feedback in
memory with an accuracy bound and a 500-row quality window, parity probes every 5 s."""
SETTLE_SECONDS = 0.3
"""Pause after a scenario's traffic so the sidecar's observers have counted it."""
DTYPES = {**DATA_DTYPES, PREDICTION_COLUMN: "int64"}
PLAIN_WIDTH = 140
"""Console width when the output is not a terminal (rich would otherwise wrap at 80)."""
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DemoOptions:
    """What `infersight demo` can be told."""

    duration_seconds: float = 90.0
    no_traffic: bool = False
    """Only serve (sidecar + model server) and print how to call it, until Ctrl-C."""
    workdir: Path | None = None
    """Where train.csv, profile.json and logs go (default: `.demo/` under the current directory)."""
    sidecar_port: int = 8090
    model_port: int = 8085
    shadow_port: int = 8086
    """The shadow candidate's model server."""
    seed: int = 0
    feedback_delay_seconds: tuple[float, float] = FEEDBACK_DELAY_SECONDS
    """Ground truth arrives this many seconds (uniform in the range) after the prediction."""


@dataclass
class Artifacts:
    """What `prepare` wrote and trained."""

    workdir: Path
    train_csv: Path
    profile: Path
    pipeline: Pipeline


@dataclass
class Sidecar:
    """The sidecar subprocess and its log files."""

    process: subprocess.Popen[bytes]
    url: str
    stderr_path: Path
    files: list[IO[bytes]] = field(default_factory=list)

    def stderr_tail(self, lines: int = 30) -> str:
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate (then kill) the subprocess and close its log files."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        for fh in self.files:
            fh.close()


def prepare(workdir: Path, seed: int, console: Console, *, golden_rows: int = 0) -> Artifacts:
    """Generate the training data, train the model, write train.csv and profile.json (with
    `golden_rows` rows and the model's outputs on them, for parity probes)."""
    workdir.mkdir(parents=True, exist_ok=True)
    columns = generate(TRAIN_ROWS, seed=seed)
    pipeline = train(columns)
    classes, _ = predict(pipeline, columns)
    table: dict[str, list[Any]] = {name: columns[name] for name in [*FEATURES, TARGET]}
    table[PREDICTION_COLUMN] = classes
    train_csv = workdir / "train.csv"
    write_csv(table, str(train_csv))
    profile, report = build_profile(
        table,
        DTYPES,
        target=TARGET,
        prediction=PREDICTION_COLUMN,
        output_name=OUTPUT_NAME,
        model=ModelInfo(name=MODEL_NAME, version=GOOD_VERSION, trained_at=datetime.now(UTC)),
        data_hash=hashlib.sha256(train_csv.read_bytes()).hexdigest(),
        golden_rows=golden_rows,
    )
    for warning in report.warnings:
        console.print(f"[yellow]profile: {warning}[/yellow]")
    profile_path = workdir / "profile.json"
    save_profile(profile, profile_path)
    return Artifacts(workdir, train_csv, profile_path, pipeline)


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def _serve(app: Any, port: int, what: str, console: Console) -> BackgroundServer:
    try:
        server = BackgroundServer(app, HOST, port)
    except OSError:
        server = BackgroundServer(app, HOST, 0)
        console.print(f"[yellow]port {port} is busy; the {what} uses {server.port}[/yellow]")
    server.start()
    return server


def start_model_server(artifacts: Artifacts, port: int, console: Console) -> BackgroundServer:
    """Serve the demo model on `port`, or on a free port when it is busy."""
    return _serve(create_app(demo_state(artifacts.pipeline)), port, "model server", console)


def start_shadow_server(candidate: Pipeline, port: int, console: Console) -> BackgroundServer:
    """Serve the shadow candidate (`CANDIDATE_VERSION`) on `port`, or on a free port."""
    return _serve(create_app(candidate_state(candidate)), port, "shadow model server", console)


def sidecar_command(
    upstream: str, profile: Path, port: int, shadow_url: str | None = None
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "app.cli",
        "serve",
        "--upstream",
        upstream,
        "--protocol",
        "v2",
        "--profile",
        str(profile),
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    if shadow_url is not None:
        command += ["--shadow-upstream", shadow_url]
    return command


def start_sidecar(
    upstream: str,
    artifacts: Artifacts,
    port: int,
    console: Console,
    *,
    shadow_url: str | None = None,
    settings: Mapping[str, str] | None = None,
) -> Sidecar:
    """Start `infersight serve` in front of `upstream` (and `shadow_url` as its shadow), its
    output going to files in workdir. `settings` are `INFERSIGHT_*` variables that win over both
    the environment and the demo's defaults."""
    if not port_is_free(port):
        chosen = free_port()
        console.print(f"[yellow]port {port} is busy; the sidecar uses {chosen}[/yellow]")
        port = chosen
    env = dict(os.environ)
    env["INFERSIGHT_LOGGING__SINK"] = str(artifacts.workdir / "requests.log")
    # Short scenarios need short windows and frequent cycles to show verdicts live.
    for key, value in DEMO_DRIFT.items():
        env.setdefault(f"INFERSIGHT_DRIFT__{key}", value)
    for key, value in DEMO_LIFECYCLE.items():
        env.setdefault(key, value)
    env.update(settings or {})
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    stdout = open(artifacts.workdir / "sidecar.out.log", "wb")  # noqa: SIM115 - closed by stop()
    stderr_path = artifacts.workdir / "sidecar.err.log"
    stderr = open(stderr_path, "wb")  # noqa: SIM115 - closed by stop()
    process = subprocess.Popen(
        sidecar_command(upstream, artifacts.profile, port, shadow_url),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=env,
    )
    return Sidecar(process, f"http://{HOST}:{port}", stderr_path, [stdout, stderr])


async def wait_ready(sidecar: Sidecar, limit_seconds: float = READY_TIMEOUT_SECONDS) -> bool:
    """Poll the sidecar's `GET /readyz` until it answers 200, it exits, or time runs out."""
    deadline = time.monotonic() + limit_seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
        while time.monotonic() < deadline and sidecar.process.poll() is None:
            try:
                async with session.get(f"{sidecar.url}/readyz") as resp:
                    if resp.status == 200:
                        return True
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.25)
    return False


async def set_control(
    session: aiohttp.ClientSession, model_url: str, control: Mapping[str, Any]
) -> None:
    """Set the model server's demo knobs (version, delay)."""
    async with session.post(f"{model_url}/demo/control", json=dict(control)) as resp:
        resp.raise_for_status()


@dataclass
class DemoRun:
    """What `play` saw: per-scenario results, the feedback sent, and the final lifecycle view."""

    results: list[ScenarioResult]
    feedback: FeedbackStats
    final: RenderableType | None = None
    """The lifecycle panels (version, feedback, shadow, parity, ML Test Score) at the end."""


StepHook = Callable[[Scenario], Awaitable[None]]


async def play(
    target_url: str,
    model_url: str,
    metrics_url: str,
    duration_seconds: float,
    console: Console,
    seed: int = 0,
    sidecar: Sidecar | None = None,
    *,
    steps: list[tuple[Scenario, float]] | None = None,
    feedback: FeedbackConfig | None = None,
    after_step: StepHook | None = None,
) -> DemoRun:
    """Play every scenario in order against `target_url` (the sidecar), showing the dashboard
    meanwhile, and send the answered rows' true labels to its `POST /feedback` once due.

    Args:
        steps: scenarios and their seconds (default: `plan(duration_seconds)`).
        feedback: how labels are sent (default: to `target_url`, 5-8 s after each answer).
        after_step: awaited after each scenario's traffic, before its result is recorded.

    When the traffic is over, the labels still waiting are sent at once, and the model server's
    knobs go back to the baseline's.
    """
    source = RowSource(seed=seed + 1)
    config = TrafficConfig(url=target_url)
    steps = plan(duration_seconds) if steps is None else steps
    fb_config = feedback or FeedbackConfig(url=target_url)
    async with (
        Dashboard(metrics_url, console) as dash,
        aiohttp.ClientSession() as session,
        FeedbackSender(fb_config, seed=seed) as sender,
    ):
        dash.feedback = sender.stats
        view = asyncio.create_task(dash.run())
        sending = asyncio.create_task(sender.run())
        try:
            for i, (scenario, seconds) in enumerate(steps, start=1):
                if sidecar is not None and sidecar.process.poll() is not None:
                    console.print("[red]the sidecar exited during the demo[/red]")
                    break
                await set_control(session, model_url, scenario.control)
                stats = TrafficStats()
                await dash.begin(scenario, f"{i}/{len(steps)}", seconds, stats)
                await run_traffic(
                    config,
                    seconds,
                    scenario.transform,
                    source,
                    seed=seed + i,
                    stats=stats,
                    on_answer=sender.recorder(scenario.name),
                )
                await asyncio.sleep(SETTLE_SECONDS)
                if after_step is not None:
                    await after_step(scenario)
                await dash.end()
            sender.stop()
            await sending
            await sender.flush()
        finally:
            view.cancel()
            sending.cancel()
            await asyncio.gather(view, sending, return_exceptions=True)
            await set_control(session, model_url, SCENARIOS[0].control)
        final = await dash.final()
    return DemoRun(dash.results, sender.stats, final)


def example_curl(sidecar_url: str, seed: int) -> str:
    """A curl command for one prediction through the sidecar."""
    row = rows(generate(1, seed=seed + 1), FEATURES)
    body = orjson.dumps(encode_request(row, "demo-1")).decode()
    return (
        f"curl -s -X POST {sidecar_url}/v2/models/{MODEL_NAME}/infer "
        f"-H 'content-type: application/json' -d {shlex.quote(body)}"
    )


def _print_urls(
    console: Console,
    artifacts: Artifacts,
    sidecar: Sidecar,
    model_url: str,
    seed: int,
    shadow_url: str | None = None,
) -> None:
    console.print(f"sidecar       {sidecar.url}   (metrics: {sidecar.url}/metrics)")
    console.print(
        f"monitoring    {sidecar.url}/monitoring/lifecycle   {sidecar.url}/monitoring/ml-test-score"
    )
    console.print(f"model server  {model_url}   (knobs: POST {model_url}/demo/control)")
    if shadow_url is not None:
        console.print(
            f"shadow        {shadow_url}   ({CANDIDATE_VERSION}, mirrored by the sidecar)"
        )
    console.print(f"profile       {artifacts.profile}   (data: {artifacts.train_csv})")
    console.print(f"request log   {artifacts.workdir / 'requests.log'}")
    console.print(
        "one prediction:\n" + example_curl(sidecar.url, seed),
        soft_wrap=True,
        highlight=False,
        markup=False,
    )


async def _serve_until_exit(sidecar: Sidecar, console: Console) -> int:
    console.print("serving until Ctrl-C")
    while sidecar.process.poll() is None:  # noqa: ASYNC110 - a subprocess, not an event
        await asyncio.sleep(0.5)
    console.print(f"[red]the sidecar exited ({sidecar.process.returncode})[/red]")
    console.print(sidecar.stderr_tail(), markup=False, highlight=False)
    return 1


async def _main(
    options: DemoOptions,
    artifacts: Artifacts,
    sidecar: Sidecar,
    model_url: str,
    console: Console,
    shadow_url: str | None = None,
) -> int:
    console.print(f"waiting for the sidecar on {sidecar.url} ...")
    if not await wait_ready(sidecar):
        state = "exited" if sidecar.process.poll() is not None else "did not become ready"
        console.print(f"[red]the sidecar {state}; last lines of its stderr:[/red]")
        console.print(sidecar.stderr_tail(), markup=False, highlight=False)
        return 1
    _print_urls(console, artifacts, sidecar, model_url, options.seed, shadow_url)
    if options.no_traffic:
        return await _serve_until_exit(sidecar, console)
    run = await play(
        sidecar.url,
        model_url,
        f"{sidecar.url}/metrics",
        options.duration_seconds,
        console,
        options.seed,
        sidecar,
        feedback=FeedbackConfig(url=sidecar.url, delay_seconds=options.feedback_delay_seconds),
    )
    console.print(summary_table(run.results, run.feedback))
    fb = run.feedback
    console.print(
        f"feedback: {fb.sent} labels in {fb.posts} posts "
        f"({fb.unknown_sent} for request ids the sidecar never served); "
        f"the sidecar answered {dict(sorted(fb.outcomes.items()))}",
        highlight=False,
    )
    if run.final is not None:
        console.print(run.final)
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _terminate_like_ctrl_c() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the demo like Ctrl-C, so the sidecar is always terminated."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def demo_console() -> Console:
    """A console for the demo: the terminal's, or `PLAIN_WIDTH` columns wide when the output is
    not a terminal (logs and CI) and `COLUMNS` does not say otherwise."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=PLAIN_WIDTH)
    return console


def run_demo(options: DemoOptions) -> int:
    """Run the demo; returns the process exit code."""
    console = demo_console()
    workdir = (options.workdir or Path.cwd() / ".demo").resolve()
    model_server: BackgroundServer | None = None
    shadow_server: BackgroundServer | None = None
    sidecar: Sidecar | None = None
    try:
        with _terminate_like_ctrl_c():
            console.print(f"training the demo model and building its profile in {workdir} ...")
            artifacts = prepare(workdir, options.seed, console, golden_rows=GOLDEN_ROWS)
            console.print(f"training the shadow candidate {CANDIDATE_VERSION} ...")
            candidate = train_candidate(options.seed)
            model_server = start_model_server(artifacts, options.model_port, console)
            shadow_server = start_shadow_server(candidate, options.shadow_port, console)
            sidecar = start_sidecar(
                model_server.url,
                artifacts,
                options.sidecar_port,
                console,
                shadow_url=shadow_server.url,
            )
            return asyncio.run(
                _main(options, artifacts, sidecar, model_server.url, console, shadow_server.url)
            )
    except KeyboardInterrupt:
        console.print("stopped")
        return 0 if options.no_traffic else 130
    finally:
        if sidecar is not None:
            sidecar.stop()
        if shadow_server is not None:
            shadow_server.stop()
        if model_server is not None:
            model_server.stop()
