"""`infersight` commands: profile build/show, serve, check, demo."""

from __future__ import annotations

import argparse
import gc
import json
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from app.errors import ConfigError, InferSightError, ProfileError
from app.monitoring.profile import (
    BooleanFeature,
    CategoricalFeature,
    Feature,
    NumericFeature,
    Profile,
    TextFeature,
)

if TYPE_CHECKING:
    from app.config import Settings

KIND_FLAGS = ("numeric", "categorical", "boolean", "text")
GC_GEN0_THRESHOLD = 10_000
"""Allocations (net of frees) between young-generation collections (CPython default: 700)."""
GRACEFUL_SHUTDOWN_SECONDS = 10
"""On SIGTERM, in-flight requests get this long to finish; the queues are drained after."""


def _describe(f: Feature) -> str:
    if isinstance(f, NumericFeature):
        bins = len(f.bin_edges) + 1
        return f"[{f.min:.4g}, {f.max:.4g}] mean {f.mean:.4g} std {f.std:.4g}, {bins} bins"
    if isinstance(f, CategoricalFeature):
        top = ", ".join(list(f.categories)[:4])
        more = "" if f.domain_complete else "+ (domain capped)"
        return f"{len(f.domain)} values{more}: {top}{' …' if len(f.categories) > 4 else ''}"
    if isinstance(f, BooleanFeature):
        return f"true {f.true_ratio:.1%}"
    assert isinstance(f, TextFeature)
    return f"{len(f.vocabulary)} tokens, median {f.length_quantiles.get('p50', 0):.0f} tokens"


def feature_table(profile: Profile) -> Table:
    """A readable table of a profile's features and prediction."""
    table = Table(title=f"model {profile.model.name} {profile.model.version or ''}".strip())
    for col in ("feature", "kind", "dtype", "missing", "required", "summary"):
        table.add_column(col)
    for f in profile.features:
        table.add_row(
            f.name, f.kind, f.dtype, f"{f.missing_ratio:.1%}", "yes" if f.required else "no",
            _describe(f),
        )  # fmt: skip
    if profile.prediction is not None:
        p = profile.prediction
        d = p.distribution
        label = f"→ {p.output_name or d.name} ({p.source})"
        table.add_row(label, d.kind, d.dtype, f"{d.missing_ratio:.1%}", "", _describe(d))
    return table


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--trained-at {text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _build_options(args: argparse.Namespace) -> Any:
    import yaml

    from app.monitoring.profile_builder import BuildOptions, FeatureOverride

    raw: dict[str, Any] = {}
    if args.schema:
        try:
            raw = yaml.safe_load(Path(args.schema).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read schema file {args.schema}: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"schema file {args.schema} must hold a mapping")
    features = dict(raw.get("features") or {})
    for kind in KIND_FLAGS:
        for name in _split(getattr(args, kind)):
            features.setdefault(name, {})["kind"] = kind
    for name in _split(args.ignore):
        features.setdefault(name, {})["ignore"] = True
    options = {k: v for k, v in raw.items() if k != "features"}
    if args.top_k is not None:
        options["top_k"] = args.top_k
    try:
        return BuildOptions(
            **options, features={n: FeatureOverride(**o) for n, o in features.items()}
        )
    except Exception as exc:
        raise ConfigError(f"invalid schema: {exc}") from None


def _split(values: list[str] | None) -> list[str]:
    return [v for item in values or [] for v in item.split(",") if v]


def cmd_profile_build(args: argparse.Namespace, console: Console) -> int:
    from app.monitoring.profile import ModelInfo, save_profile
    from app.monitoring.profile_builder import build_profile
    from app.tables import file_hash, read_table

    if args.golden_rows < 0:
        raise ConfigError("--golden-rows must be 0 or more")
    if args.golden_rows and not args.prediction:
        raise ConfigError(
            "--golden-rows needs --prediction: golden rows are stored with the model's outputs"
        )
    path = Path(args.data)
    columns, dtypes = read_table(path)
    model = ModelInfo(
        name=args.model_name or path.stem,
        version=args.model_version,
        trained_at=_parse_time(args.trained_at),
    )
    profile, report = build_profile(
        columns,
        dtypes,
        target=args.target,
        prediction=args.prediction,
        output_name=args.output_name,
        model=model,
        data_hash=file_hash(path),
        options=_build_options(args),
        golden_rows=args.golden_rows,
    )
    save_profile(profile, args.output)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(feature_table(profile))
    console.print(f"{profile.n_rows} rows, {len(profile.features)} features → {args.output}")
    if profile.golden is not None:
        console.print(f"{len(profile.golden.rows)} golden rows for parity probes")
    return 0


def cmd_profile_show(args: argparse.Namespace, console: Console) -> int:
    from app.monitoring.profile import load_profile

    profile = load_profile(args.profile)
    console.print(feature_table(profile))
    console.print(
        f"format {profile.format_version}, created {profile.created_at.isoformat()}, "
        f"trained {profile.model.trained_at.isoformat() if profile.model.trained_at else '?'}, "
        f"{profile.n_rows} rows, data {profile.data_hash}, hash {profile.content_hash()}"
    )
    return 0


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    import json

    from app.monitoring.drift_types import DriftConfig
    from app.monitoring.profile import load_profile
    from app.offline_check import check_batch
    from app.tables import read_table

    profile = load_profile(args.profile)
    columns, _ = read_table(Path(args.data))
    if args.prediction and args.prediction not in columns:
        raise ConfigError(f"--prediction column '{args.prediction}' is not in {args.data}")
    config = DriftConfig(alpha=args.alpha, correction=args.correction, min_rows=args.min_rows)
    result = check_batch(profile, columns, config, args.prediction)
    n = result.n_rows
    console.print(drift_table(result.drift, title=f"{args.data}: {n} rows against {args.profile}"))
    violations = Table(title="validation")
    for col in ("feature", "kind", "rows", "share"):
        violations.add_column(col)
    for (feature, kind), count in sorted(result.validation.violation_counts.items()):
        violations.add_row(feature, kind, str(count), f"{count / n:.2%}" if n else "-")
    console.print(violations)
    drifted = result.drifted
    console.print(
        f"{result.validation.n_violations} violations"
        + (" (enforced ones would be rejected online)" if result.validation.rejected else "")
        + f"; drift: {', '.join(drifted) if drifted else 'none'}"
    )
    if args.json:
        doc = {
            "rows": n,
            "drifted": drifted,
            "violations": [
                {"feature": f, "kind": k, "rows": c}
                for (f, k), c in sorted(result.validation.violation_counts.items())
            ],
            "drift": result.drift.as_dict(),
        }
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    if drifted:
        return 1
    if args.fail_on_violations and result.validation.rejected:
        return 1
    return 0


def drift_table(report: Any, title: str) -> Table:
    """Per feature: the deciding test, its statistic, p-value, effect, threshold, verdict."""
    table = Table(title=title)
    for col in (
        "feature",
        "kind",
        "rows",
        "test",
        "statistic",
        "p-value",
        "effect",
        "threshold",
        "verdict",
    ):
        table.add_column(col)
    items = list(report.features) + ([report.prediction] if report.prediction else [])
    for fd in items:
        verdict = "n/a" if fd.drift is None else ("[red]DRIFT[/red]" if fd.drift else "ok")
        deciding = [t for t in fd.tests if t.decides] or list(fd.tests[:1])
        for i, t in enumerate(deciding):
            table.add_row(
                fd.feature if i == 0 else "", fd.kind if i == 0 else "",
                str(fd.n_rows) if i == 0 else "", t.test, f"{t.statistic:.4g}",
                "-" if t.p_value is None else f"{t.p_value:.3g}",
                "-" if t.effect is None else f"{t.effect:.3g}", f"{t.threshold:.3g}",
                verdict if i == 0 else "",
            )  # fmt: skip
    return table


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the latency tail of a long-running server.

    Everything built by the time the server starts (imports, profiles, compiled checks, pools,
    threads) is moved out of the collector's reach with `gc.freeze()`: a full collection then
    scans only what requests created, instead of ~86,000 long-lived objects (70-90 ms pauses,
    one every few seconds under load, measured on a 2-core machine). A larger first-generation
    threshold makes young collections rarer. Reference counting still frees everything.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def _stopped_by_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


_SECTION_FLAGS: dict[str, tuple[tuple[str, str], ...]] = {
    "upstream": (("url", "upstream"),),
    "shadow": (("url", "shadow_upstream"), ("grpc_address", "shadow_grpc")),
    "grpc": (("port", "grpc_port"), ("upstream", "upstream_grpc")),
}
"""`serve` flags that set a field of a settings section: section → ((field, flag), …)."""


def serve_settings(args: argparse.Namespace) -> Settings:
    """The settings `infersight serve` runs with: flags, then environment, then the YAML file,
    then defaults.

    Raises:
        ConfigError: naming the setting that is wrong.
    """
    from pydantic import ValidationError

    from app.config import load_settings

    overrides: dict[str, Any] = {"host": args.host, "port": args.port, "protocol": args.protocol}
    if args.profile:
        overrides["profiles"] = args.profile
    sections = {
        name: flags
        for name, fields in _SECTION_FLAGS.items()
        if (flags := {f: getattr(args, a) for f, a in fields if getattr(args, a) is not None})
    }
    settings = load_settings(args.config, **overrides, **sections)
    # The environment's fields of a section win over values passed in: put the flags back.
    update = {}
    for name, flags in sections.items():
        section = getattr(settings, name)
        try:
            update[name] = type(section).model_validate({**section.model_dump(), **flags})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in (name, *err["loc"]))
            raise ConfigError(f"setting '{loc}': {err['msg']}") from None
    return settings.model_copy(update=update) if update else settings


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    import uvicorn

    from app.main import create_app
    from app.telemetry.logging import uvicorn_log_config

    settings = serve_settings(args)
    if not settings.profiles:
        console.print("[yellow]warning:[/yellow] no --profile: requests are forwarded unmonitored")
    app = create_app(settings, on_started=tune_gc)
    # uvicorn handles SIGTERM itself (stop accepting, finish in-flight requests, run the
    # lifespan shutdown that drains the queues), then re-raises it under the handler it found.
    # With the default disposition a drained stop would die by the signal (status 143); this
    # handler makes it exit 0. It also ends a start that has not reached uvicorn yet.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _stopped_by_sigterm)
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_config=uvicorn_log_config(),
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            # The sidecar never reads the client address: skip the X-Forwarded-* middleware.
            proxy_headers=False,
        )
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def cmd_ml_test_score(args: argparse.Namespace, console: Console) -> int:
    from app.lifecycle.score_report import combine, fetch_json, loaded_alerts, render

    report = fetch_json(args.sidecar.rstrip("/") + "/monitoring/ml-test-score")
    alerts = loaded_alerts(args.prometheus) if args.prometheus else None
    result = combine(report, alerts)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        render(result, console)
    return 0


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from app.demo.runner import DemoOptions, run_demo

    return run_demo(DemoOptions(duration_seconds=args.duration, no_traffic=args.no_traffic))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `infersight`."""
    parser = argparse.ArgumentParser(prog="infersight", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    prof = sub.add_parser("profile", help="build or show a reference profile")
    psub = prof.add_subparsers(dest="profile_command", required=True)
    build = psub.add_parser("build", help="build a profile from training data (CSV or Parquet)")
    build.add_argument("data")
    build.add_argument("--target", help="label column (never a feature)")
    build.add_argument("--prediction", help="column with the model's outputs on this data")
    build.add_argument("--output-name", help="the output's name on the wire")
    build.add_argument("--model-name")
    build.add_argument("--model-version")
    build.add_argument("--trained-at", help="ISO 8601 time the model was trained")
    build.add_argument("--schema", help="YAML file with per-feature kinds, policies, tolerances")
    for kind in KIND_FLAGS:
        build.add_argument(f"--{kind}", action="append", metavar="COLS", help=f"force {kind}")
    build.add_argument("--ignore", action="append", metavar="COLS", help="columns to leave out")
    build.add_argument("--top-k", type=int, help="categories with their own bin (default 20)")
    build.add_argument(
        "--golden-rows", type=int, default=0, metavar="N",
        help="keep N rows spread over the data, with their --prediction values, for parity "
        "probes (default 0: none; needs --prediction)",
    )  # fmt: skip
    build.add_argument("-o", "--output", required=True)
    build.set_defaults(func=cmd_profile_build)
    show = psub.add_parser("show", help="print a profile as a table")
    show.add_argument("profile")
    show.set_defaults(func=cmd_profile_show)

    serve = sub.add_parser("serve", help="run the sidecar")
    serve.add_argument("--upstream", help="model server base URL")
    serve.add_argument("--protocol", choices=["v2", "v1", "mlflow"])
    serve.add_argument("--profile", action="append", help="PATH or NAME=PATH (repeatable)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--config", help="YAML settings file")
    serve.add_argument(
        "--shadow-upstream", metavar="URL",
        help="mirror a share of requests to this candidate model server (shadow.*)",
    )  # fmt: skip
    serve.add_argument(
        "--grpc-port", type=int, metavar="PORT",
        help="also serve the Open Inference Protocol over gRPC on this port (grpc.*)",
    )  # fmt: skip
    serve.add_argument(
        "--upstream-grpc", metavar="HOST:PORT", help="the model server's gRPC endpoint"
    )
    serve.add_argument(
        "--shadow-grpc", metavar="HOST:PORT",
        help="mirror a share of gRPC ModelInfer calls to this candidate's gRPC endpoint",
    )  # fmt: skip
    serve.set_defaults(func=cmd_serve)

    score = sub.add_parser(
        "ml-test-score",
        help="ML Test Score monitors 1-7 for a running sidecar (and its Prometheus's alerts)",
    )
    score.add_argument("--sidecar", default="http://127.0.0.1:8090", help="the sidecar's base URL")
    score.add_argument("--prometheus", help="Prometheus base URL, to check the alert rules loaded")
    score.add_argument("--json", action="store_true", help="print JSON instead of a table")
    score.set_defaults(func=cmd_ml_test_score)

    check = sub.add_parser(
        "check", help="validate and drift-test a data file offline (exit 1 on drift)"
    )
    check.add_argument("data")
    check.add_argument("--profile", required=True)
    check.add_argument("--prediction", help="column with the model's outputs, to test them too")
    check.add_argument("--json", help="also write the full report as JSON to this file")
    check.add_argument("--alpha", type=float, default=0.01, help="family-wise error rate")
    check.add_argument("--correction", choices=["bonferroni", "bh", "none"], default="bonferroni")
    check.add_argument("--min-rows", type=int, default=1000, help="no verdict below this")
    check.add_argument(
        "--fail-on-violations", action="store_true", help="exit 1 on enforced violations too"
    )
    check.set_defaults(func=cmd_check)

    demo = sub.add_parser("demo", help="run the embedded demo")
    demo.add_argument("--duration", type=float, default=90.0, help="seconds of traffic")
    demo.add_argument("--no-traffic", action="store_true", help="serve only; print the URLs")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `infersight` command."""
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        code: int = args.func(args, console)
    except (ProfileError, ConfigError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except InferSightError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
