"""Which profile, validator, counters and metric children serve a request for a model name."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from app.lifecycle.versions import VersionTracker
from app.monitoring.profile import OTHER_BIN, Profile
from app.monitoring.serving_stats import ModelStats
from app.monitoring.validator import Validator
from app.monitoring.windows import ModelWindows
from app.telemetry.metrics import Metrics, ModelMetrics


@dataclass(slots=True)
class MonitoredModel:
    """Everything the hot path needs for one model; `validator` is None for unprofiled models."""

    name: str
    """The metric label: the profile's key, or `__other__`."""
    profile: Profile | None
    validator: Validator | None
    stats: ModelStats | None
    metrics: ModelMetrics
    windows: ModelWindows | None = None
    """Drift windows (None when drift is off or the model is unprofiled)."""
    versions: VersionTracker | None = None
    """The served version (None for unprofiled models)."""

    feature_order: list[str] = field(default_factory=list)
    """The profile's features in training column order (computed once)."""

    def __post_init__(self) -> None:
        if self.profile is not None and not self.feature_order:
            self.feature_order = self.profile.feature_names


class ModelRouter:
    """Maps the model named in a request to its `MonitoredModel` (unknown names → `__other__`)."""

    def __init__(
        self,
        profiles: dict[str, Profile],
        metrics: Metrics,
        protocol: str,
        make_validator: Callable[[Profile], Validator] = Validator,
        make_windows: Callable[[str, Validator, ModelStats], ModelWindows] | None = None,
        make_versions: Callable[[str, Profile], VersionTracker] | None = None,
    ) -> None:
        self.models: dict[str, MonitoredModel] = {}
        for name, profile in profiles.items():
            validator = make_validator(profile)
            stats = ModelStats(profile, validator.checks)
            self.models[name] = MonitoredModel(
                name=name,
                profile=profile,
                validator=validator,
                stats=stats,
                metrics=ModelMetrics(metrics, name, protocol),
                windows=make_windows(name, validator, stats) if make_windows else None,
                versions=make_versions(name, profile) if make_versions else None,
            )
            trained = profile.model.trained_at
            if trained is not None:
                metrics.model_trained.labels(name).set(trained.timestamp())
            metrics.profile_created.labels(name).set(profile.created_at.timestamp())
            if make_versions is None:
                metrics.model_info.labels(
                    name, profile.model.version or "unknown", profile.content_hash()
                ).set(1)
        self.other = MonitoredModel(
            OTHER_BIN, None, None, None, ModelMetrics(metrics, OTHER_BIN, protocol)
        )
        # With one profile and a protocol without model names (MLflow), every request is it.
        self.default = next(iter(self.models.values())) if len(self.models) == 1 else None

    def resolve(self, name: str | None) -> MonitoredModel:
        """The monitored model for a name from the URL (None: the protocol names no model)."""
        if name is None:
            return self.default or self.other
        return self.models.get(name, self.other)

    def stats(self) -> dict[str, ModelStats]:
        """Counters by model label, for the scrape-time collector."""
        return {m.name: m.stats for m in self.models.values() if m.stats is not None}

    def windows(self) -> dict[str, ModelWindows]:
        """Drift windows by model label."""
        return {m.name: m.windows for m in self.models.values() if m.windows is not None}

    def versions(self) -> dict[str, VersionTracker]:
        """Version trackers by model label."""
        return {m.name: m.versions for m in self.models.values() if m.versions is not None}

    def names(self) -> Iterable[str]:
        return self.models.keys()
