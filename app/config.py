"""Settings: one model, from CLI flags, environment (`INFERSIGHT_…`) and an optional YAML file.

Precedence, highest first: CLI flags, environment, YAML file, defaults. Nested sections use `__`
in the environment: `INFERSIGHT_UPSTREAM__TIMEOUT_SECONDS=5`. This module is also the
configuration reference: every field's docstring is what README.md lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from app.errors import ConfigError

ProtocolName = Literal["v2", "v1", "mlflow"]
QUALITY_ALERT_METRICS = frozenset({"accuracy", "log_loss", "brier", "mae", "rmse"})
"""Quality metrics that Prometheus computes fleet-wide from counters (and can alert on)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UpstreamSettings(_Section):
    """The model server InferSight forwards to."""

    url: str = "http://127.0.0.1:8080"
    """Base URL of the model server (scheme, host, port; no path)."""
    connect_timeout_seconds: float = Field(default=2.0, gt=0)
    """Time allowed to open a connection; past it the client gets 502."""
    timeout_seconds: float = Field(default=30.0, gt=0)
    """Time allowed for the whole upstream answer; past it the client gets 504."""
    pool_size: int = Field(default=256, ge=1)
    """Maximum open connections to the model server."""
    probe_interval_seconds: float = Field(default=5.0, gt=0)
    """How often the readiness probe behind `infersight_upstream_up` runs."""
    retry_on_disconnect: bool = True
    """Send a request once more when its connection breaks before any answer (typically a
    kept-alive connection the model server had closed). Assumes inference is idempotent."""
    connect_retries: int = Field(default=0, ge=0, le=10)
    """Times a request is sent again when no connection could be opened (refused or timed
    out). The model server never saw it, so this is safe for any request. The waits start at
    `retry_backoff_seconds` and double, all within the request's `timeout_seconds`."""
    retry_backoff_seconds: float = Field(default=0.05, gt=0)
    """First wait before a connect retry."""
    breaker_failures: int = Field(default=0, ge=0)
    """Transport failures in a row (cannot connect, connection broken, timeout, not HTTP)
    that open the circuit breaker; while it is open, inference requests fail fast with 502
    instead of waiting. 0: no breaker."""
    breaker_open_seconds: float = Field(default=5.0, gt=0)
    """How long the breaker stays open before one trial request goes through (a readiness
    probe that succeeds closes it at once)."""
    ready_path: str | None = None
    """Readiness path to probe (default by protocol: `/v2/health/ready`, `/v1/models/<m>`,
    `/ping`)."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("upstream.url must start with http:// or https://")
        return value.rstrip("/")


class ValidationSettings(_Section):
    """Input validation against the profile."""

    observe_only: bool = False
    """Downgrade every `enforce` policy to `observe`: count and log, never reject."""
    unknown_features: Literal["enforce", "observe"] = "observe"
    """Policy for input columns that the profile does not know."""
    vectorize_min_rows: int = Field(default=256, ge=1)
    """Batches with at least this many rows are checked with numpy instead of plain Python."""
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Requests with a larger body are answered 413 and not forwarded."""
    max_rows: int = Field(default=100_000, ge=1)
    """Requests with more rows are answered 413 and not forwarded."""
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    """Time allowed to receive a request's whole body once its headers arrived; past it the
    client gets 408 and nothing is forwarded (a stalled or trickling client cannot hold a
    connection forever)."""


class LoggingSettings(_Section):
    """Application logs and the one-line-per-request log."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"
    """`json` for machines; `console` for people at a terminal."""
    requests: bool = True
    """Write one `request.completed` line per request."""
    sink: str = "stdout"
    """`stdout`, `stderr` or a file path for request lines."""
    queue_size: int = Field(default=10_000, ge=1)
    """Bounded queue between the request path and the writer; overflow is counted and dropped."""
    payload: bool = False
    """Include input values and predictions in request lines."""
    payload_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    """With `payload`, the share of requests whose values are logged."""
    payload_max_rows: int = Field(default=20, ge=1)
    """With `payload`, at most this many rows per request line."""
    redact_fields: list[str] = Field(default_factory=list)
    """Input fields whose values are replaced by `[redacted]` in payload logs."""


class AuthSettings(_Section):
    """Bearer tokens for the routes that need them."""

    admin_token: SecretStr | None = None
    """Enables `/admin/*` (disabled when unset)."""
    feedback_token: SecretStr | None = None
    """When set, `/feedback` requires it."""
    metrics_token: SecretStr | None = None
    """When set, `/metrics` requires it."""


class MetricsSettings(_Section):
    """Prometheus exposition."""

    memory_limit_bytes: int | None = None
    """Memory limit reported as `infersight_memory_limit_bytes` (default: read from the cgroup)."""


class DriftSettings(_Section):
    """Drift tests on sliding windows, run off the request path in a worker process."""

    enabled: bool = True
    """Keep windows and run drift cycles (off: no windows, no drift metrics)."""
    interval_seconds: float = Field(default=60.0, gt=0)
    """Seconds between drift cycles."""
    window_rows: int = Field(default=5000, ge=10)
    """Recent rows kept per feature and model output."""
    window_seconds: float | None = Field(default=None, gt=0)
    """Also drop values older than this (a time-based window); None: count-based only."""
    min_rows: int = Field(default=1000, ge=1)
    """No verdict until a window holds this many values."""
    alpha: float = Field(default=0.01, gt=0, lt=1)
    """Family-wise false-alarm rate per model and cycle (before the effect floors)."""
    correction: Literal["bonferroni", "bh", "none"] = "bonferroni"
    """Multiple-testing correction across a model's features: Bonferroni or Benjamini-Hochberg."""
    cycle_timeout_seconds: float = Field(default=30.0, gt=0)
    """A cycle running longer is abandoned and counted as an error."""


class FeedbackSettings(_Section):
    """Ground truth: predictions kept for matching, `POST /feedback`, quality windows."""

    enabled: bool = True
    """Keep predictions for matching and accept `POST /feedback` (needs a profiled model)."""
    store: str = "sqlite:infersight-feedback.db"
    """Where predictions wait for their labels: `sqlite:PATH` (one replica; survives a
    restart), `sqlite::memory:` (lost on restart), or a `postgresql://…` URL (several replicas
    sharing one store)."""
    max_rows: int = Field(default=1_000_000, ge=1)
    """Predictions kept (one per row); the oldest are evicted past it (counted)."""
    ttl_seconds: float = Field(default=30 * 86400, gt=0)
    """Feedback for a prediction older than this is `expired`."""
    key_field: str | None = None
    """An input field whose value identifies a row for feedback (a business key such as an
    application id) besides `request_id` and `row`."""
    window_rows: int = Field(default=1000, ge=10)
    """Labelled predictions in the quality window behind `infersight_model_quality`."""
    min_rows: int = Field(default=30, ge=1)
    """No quality values until the window holds this many labelled predictions."""
    task: Literal["auto", "classification", "regression"] = "auto"
    """How labels are compared with predictions; `auto` follows the profile's prediction."""
    positive_class: str | None = None
    """Binary classification: the label that counts as positive (default: the profile's,
    else `1`)."""
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    """A probability output at or above this predicts the positive class."""
    calibration_bins: int = Field(default=10, ge=2, le=20)
    """Reliability bins over [0, 1] for probability outputs."""
    queue_size: int = Field(default=10_000, ge=1)
    """Responses waiting to be written to the store; overflow is counted and dropped."""
    max_items: int = Field(default=10_000, ge=1)
    """Most labels accepted in one `POST /feedback` (more: 413)."""
    thresholds: dict[str, float] = Field(default_factory=dict)
    """Alert bounds for fleet-wide quality, e.g. `{accuracy: 0.8, log_loss: 0.5}`: accuracy
    below its bound, or log_loss, brier, mae, rmse above theirs, fires `InferSightQualityDrop`
    (exported as `infersight_model_quality_threshold`)."""

    @field_validator("thresholds")
    @classmethod
    def _known_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - QUALITY_ALERT_METRICS
        if unknown:
            raise ValueError(
                f"unknown quality metric(s) {sorted(unknown)}; use {sorted(QUALITY_ALERT_METRICS)}"
            )
        return value


def host_port(value: str | None, name: str) -> str | None:
    """`value` when it is a gRPC target `HOST:PORT` (or None); raises ValueError naming `name`."""
    if value is None:
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or "://" in value:
        raise ValueError(f"{name} must be HOST:PORT (no scheme)")
    return value


class ShadowSettings(_Section):
    """A candidate model that gets a mirrored share of the traffic (never affects clients)."""

    url: str | None = None
    """Base URL of the shadow model server (same protocol and paths as the upstream); unset:
    no shadow."""
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of successful requests mirrored to the shadow."""
    max_concurrency: int = Field(default=4, ge=1)
    """Mirrored requests in flight at once."""
    queue_size: int = Field(default=100, ge=1)
    """Mirrored requests waiting; past it they are dropped (counted)."""
    timeout_seconds: float = Field(default=5.0, gt=0)
    """Time allowed for the shadow's answer."""
    tolerance: float = Field(default=0.0, ge=0.0)
    """Numeric predictions agree when they differ by at most this (classes must be equal)."""
    grpc_address: str | None = None
    """The shadow model server's gRPC endpoint as `HOST:PORT`: ModelInfer calls the sidecar
    serves over gRPC are mirrored there (HTTP requests go to `url`)."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("shadow.url must start with http:// or https://")
        return value.rstrip("/") if value else value

    @field_validator("grpc_address")
    @classmethod
    def _grpc_address(cls, value: str | None) -> str | None:
        return host_port(value, "shadow.grpc_address")

    @property
    def enabled(self) -> bool:
        """A shadow is configured for at least one transport."""
        return self.url is not None or self.grpc_address is not None


class ParitySettings(_Section):
    """Replays the profile's golden rows to the model server and compares the answers."""

    enabled: bool = True
    """Run parity probes for every profile that carries golden rows."""
    interval_seconds: float = Field(default=300.0, gt=0)
    """Seconds between probes."""
    tolerance: float | None = Field(default=None, ge=0.0)
    """Largest absolute difference that still matches (default: the profile's)."""
    request_format: Literal["auto", "columns", "matrix"] = "auto"
    """How golden rows are sent: `columns` (V2: one tensor per feature; V1/MLflow: records or
    a split frame) or `matrix` (one 2-D tensor in the profile's feature order); `auto` picks
    `columns`."""


class LifecycleSettings(_Section):
    """Model version, staleness."""

    max_model_age_days: float = Field(default=30.0, gt=0)
    """`InferSightModelStale` fires when the model was trained longer ago than this."""
    model_version: str | None = None
    """The served version when the protocol does not say it (V1, MLflow); default: the
    profile's."""
    version_header: str | None = None
    """A response header that carries the served model version (any protocol)."""
    metadata_interval_seconds: float = Field(default=60.0, gt=0)
    """How often the model server's metadata (V2 `/v2/models/<m>`, `/v2`; MLflow
    `/version`) is read for versions."""


class GrpcSettings(_Section):
    """The Open Inference Protocol over gRPC, served beside HTTP (protocol `v2` only)."""

    port: int | None = Field(default=None, ge=0, le=65535)
    """Port of the gRPC server (`inference.GRPCInferenceService`); unset: no gRPC server."""
    upstream: str | None = None
    """The model server's gRPC endpoint as `HOST:PORT` (needed with `port`)."""
    max_message_bytes: int | None = Field(default=None, ge=1024)
    """Larger ModelInfer messages are refused with RESOURCE_EXHAUSTED, counted as
    `reason="too_large"` and logged (default: `validation.max_body_bytes`); past twice this,
    grpcio refuses any message itself, before the sidecar sees it."""

    @field_validator("upstream")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        return host_port(value, "grpc.upstream")


class Settings(BaseSettings):
    """Everything `infersight serve` can be told."""

    model_config = SettingsConfigDict(
        env_prefix="INFERSIGHT_", env_nested_delimiter="__", extra="forbid"
    )

    host: str = "127.0.0.1"
    """Address to listen on (the container sets 0.0.0.0)."""
    port: int = Field(default=8090, ge=0, le=65535)
    protocol: ProtocolName = "v2"
    """Wire protocol of the model server: v2 (Open Inference / KServe V2), v1 (TF Serving /
    KServe V1) or mlflow."""
    profiles: list[str] = Field(default_factory=list)
    """Profiles as `PATH` (keyed by the profile's model name) or `NAME=PATH`."""
    config: str | None = None
    """YAML file with any of these settings (set by `--config`)."""
    upstream: UpstreamSettings = UpstreamSettings()
    validation: ValidationSettings = ValidationSettings()
    logging: LoggingSettings = LoggingSettings()
    auth: AuthSettings = AuthSettings()
    metrics: MetricsSettings = MetricsSettings()
    drift: DriftSettings = DriftSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    shadow: ShadowSettings = ShadowSettings()
    parity: ParitySettings = ParitySettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    grpc: GrpcSettings = GrpcSettings()

    @field_validator("profiles", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p for p in value.split(",") if p]
        return value

    def profile_paths(self) -> list[tuple[str | None, Path]]:
        """Profiles as (explicit name or None, path)."""
        out: list[tuple[str | None, Path]] = []
        for item in self.profiles:
            name, sep, path = item.partition("=")
            out.append((name, Path(path)) if sep else (None, Path(item)))
        return out

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _YAML_PATH.get("path")
        if path is not None:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=_read_yaml(path)))
        return tuple(sources)


_YAML_PATH: dict[str, Path | None] = {"path": None}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from flags (`overrides`), environment and an optional YAML file.

    Raises:
        ConfigError: naming the setting that is wrong.
    """
    import os

    if config is None:
        config = os.environ.get("INFERSIGHT_CONFIG")
    _YAML_PATH["path"] = Path(config) if config else None
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"setting '{loc}': {err['msg']}") from None
    finally:
        _YAML_PATH["path"] = None
    if config:
        settings = settings.model_copy(update={"config": str(config)})
    return settings
