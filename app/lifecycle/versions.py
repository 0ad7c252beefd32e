"""Which model version the upstream serves, learnt from its answers and its metadata.

Sources, in order of trust: the version in each inference response (V2 `model_version`, V1
`model_version`), a configured response header, the model metadata read on a schedule (V2
`/v2/models/<m>` when it lists one version; TF-Serving `/v1/models/<m>`), then the configured
`lifecycle.model_version`, then the profile's. `infersight_model_info` always holds exactly one
series per model (the current version); a change of an observed version increments
`infersight_model_version_changes_total` and logs `model.version_changed`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from multidict import CIMultiDict

from app.errors import UpstreamError
from app.telemetry.lifecycle_metrics import LifecycleMetrics
from app.telemetry.metrics import Metrics
from app.upstream.client import UpstreamClient

log = structlog.get_logger("infersight.versions")

_UNSAFE = re.compile(r"[^A-Za-z0-9._:+@/-]")
MAX_VERSION_CHARS = 64
UNKNOWN = "unknown"


def clean_version(value: Any) -> str | None:
    """A version as a bounded, printable label value (None when absent or empty)."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = _UNSAFE.sub("_", str(value).strip())[:MAX_VERSION_CHARS]
    return text or None


class VersionTracker:
    """The served version of one model and the metrics that follow it."""

    def __init__(
        self,
        model: str,
        profile_version: str | None,
        profile_hash: str,
        metrics: Metrics,
        lifecycle: LifecycleMetrics,
        configured: str | None = None,
    ) -> None:
        self.model = model
        self.profile_version = profile_version
        self.profile_hash = profile_hash
        self._info = metrics.model_info
        self._changes = lifecycle.version_changes.labels(model)
        self._mismatch = lifecycle.profile_mismatch.labels(model)
        self.current: str | None = clean_version(configured) or profile_version
        self.observed = False
        """True once the upstream itself has reported a version."""
        self.changes = 0
        self.changed_at: float | None = None
        """Unix time of the latest change."""
        self._info.labels(model, self.current or UNKNOWN, profile_hash).set(1)
        self._mismatch.set(0)

    def seen(self, version: str | None, source: str = "response") -> None:
        """Record a version the upstream reported (cheap when unchanged)."""
        if version is None or (version == self.current and self.observed):
            return
        cleaned = clean_version(version)
        if cleaned is None:
            return
        previous, was_observed = self.current, self.observed
        self.observed = True
        if cleaned != previous:
            self._info.remove(self.model, previous or UNKNOWN, self.profile_hash)
            self._info.labels(self.model, cleaned, self.profile_hash).set(1)
            self.current = cleaned
            if was_observed:
                self.changes += 1
                self.changed_at = time.time()
                self._changes.inc()
                log.warning(
                    "model.version_changed",
                    model=self.model,
                    previous=previous,
                    version=cleaned,
                    source=source,
                )
            else:
                log.info("model.version_observed", model=self.model, version=cleaned, source=source)
        mismatch = self.profile_version is not None and cleaned != self.profile_version
        self._mismatch.set(1 if mismatch else 0)
        if mismatch and not was_observed:
            log.warning(
                "profile.version_mismatch",
                model=self.model,
                served=cleaned,
                profile=self.profile_version,
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.current,
            "observed": self.observed,
            "profile_version": self.profile_version,
            "profile_mismatch": self.profile_version is not None
            and self.observed
            and self.current != self.profile_version,
            "changes": self.changes,
            "changed_at": self.changed_at,
        }


def version_from_metadata(protocol: str, doc: Any) -> str | None:
    """The served version in a model-metadata document, when it names exactly one."""
    if not isinstance(doc, dict):
        return None
    if protocol == "v2":
        versions = doc.get("versions")
        if isinstance(versions, list) and len(versions) == 1:
            return clean_version(versions[0])
        return None
    if protocol == "v1":
        status = doc.get("model_version_status")
        if isinstance(status, list):
            live = [
                s.get("version")
                for s in status
                if isinstance(s, dict) and s.get("state", "AVAILABLE") == "AVAILABLE"
            ]
            if live:
                return clean_version(max(live, key=lambda v: (len(str(v)), str(v))))
    return None


class MetadataPoller:
    """Reads model and server metadata from the upstream on a schedule."""

    def __init__(
        self,
        protocol: str,
        upstream: UpstreamClient,
        trackers: Mapping[str, VersionTracker],
        lifecycle: LifecycleMetrics,
        interval_seconds: float,
    ) -> None:
        self.protocol = protocol
        self.upstream = upstream
        self.trackers = trackers
        self.lifecycle = lifecycle
        self.interval_seconds = interval_seconds
        self.server: tuple[str, str] | None = None
        """(software, version) of the model server, when its metadata says."""

    async def _get(self, path: str) -> Any:
        try:
            answer = await self.upstream.request("GET", path, CIMultiDict(), None)
        except UpstreamError:
            return None
        if not 200 <= answer.status < 300:
            return None
        try:
            return orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            return answer.body.decode("utf-8", "replace").strip()

    async def poll_once(self) -> None:
        """Read the metadata once and update trackers and `infersight_upstream_info`."""
        if self.protocol == "v2":
            doc = await self._get("/v2")
            if isinstance(doc, dict):
                self._server(doc.get("name"), doc.get("version"))
            for name, tracker in self.trackers.items():
                version = version_from_metadata("v2", await self._get(f"/v2/models/{name}"))
                tracker.seen(version, "metadata")
        elif self.protocol == "v1":
            for name, tracker in self.trackers.items():
                version = version_from_metadata("v1", await self._get(f"/v1/models/{name}"))
                tracker.seen(version, "metadata")
        else:
            doc = await self._get("/version")
            if isinstance(doc, str) and doc:
                self._server("mlflow", doc)

    def _server(self, software: Any, version: Any) -> None:
        name, ver = clean_version(software), clean_version(version)
        if name is None or ver is None:
            return
        if self.server == (name, ver):
            return
        if self.server is not None:
            self.lifecycle.upstream_info.remove(*self.server)
            self.lifecycle.upstream_changes.inc()
            log.warning(
                "upstream.version_changed",
                previous=f"{self.server[0]} {self.server[1]}",
                server=name,
                version=ver,
            )
        self.server = (name, ver)
        self.lifecycle.upstream_info.labels(name, ver).set(1)

    async def run_forever(self) -> None:
        """Poll every interval; failures are ignored until the next poll."""
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("metadata.poll_failed", error=repr(exc)[:200])
            await asyncio.sleep(self.interval_seconds)
