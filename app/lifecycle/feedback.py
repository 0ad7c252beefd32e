"""`POST /feedback`: ground-truth labels matched to earlier predictions, scored, and counted.

Body: `{"feedback": [{"request_id": "…", "row": 0, "label": …}, …]}`; an item may name its
`model` (required when several models are profiled) and may use `key` (the value of the
configured `feedback.key_field`) instead of `request_id`/`row`. Every item gets one outcome:
matched, unknown (no such prediction: never seen by this sidecar, or evicted), duplicate
(already labelled), expired (older than the TTL) or invalid (the item itself is wrong).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from app.config import FeedbackSettings
from app.errors import DecodeError, PayloadTooLarge
from app.feedback.recorder import FeedbackRecorder
from app.feedback.store import OUTCOMES, Lookup, Outcome
from app.monitoring.profile import OTHER_BIN
from app.monitoring.quality import QualitySpec, QualityWindow, Scored, score_pair
from app.monitoring.values import category_key, is_missing
from app.protocols.json_body import loads
from app.telemetry.lifecycle_metrics import ModelFeedbackMetrics

log = structlog.get_logger("infersight.feedback")

MAX_DETAILS = 100


@dataclass
class ModelQuality:
    """What feedback needs for one model: how to score, the window, the counters."""

    spec: QualitySpec
    window: QualityWindow
    metrics: ModelFeedbackMetrics


def _label_problem(spec: QualitySpec, label: Any) -> str | None:
    if is_missing(label) or isinstance(label, (list, dict)):
        return "'label' must be a number, a string or a boolean"
    if spec.task == "regression":
        if type(label) not in (int, float):
            return "'label' must be a number for a regression model"
    elif category_key(label) is None:
        return "'label' must be a class (a string, a number or a boolean)"
    return None


class FeedbackService:
    """Parses feedback, matches it through the recorder, updates quality windows and counters."""

    def __init__(
        self,
        settings: FeedbackSettings,
        recorder: FeedbackRecorder,
        models: Mapping[str, ModelQuality],
        other: ModelFeedbackMetrics,
    ) -> None:
        self.settings = settings
        self.recorder = recorder
        self.models = models
        self.other = other
        self.default = next(iter(models)) if len(models) == 1 else None

    def windows(self) -> dict[str, QualityWindow]:
        """Quality windows by model (for the scrape-time collector)."""
        return {name: m.window for name, m in self.models.items()}

    async def handle(self, body: bytes) -> dict[str, Any]:
        """Process one feedback body; returns the response document.

        Raises:
            DecodeError: the body is not a feedback document (names the item and field).
            PayloadTooLarge: more than `feedback.max_items` items.
        """
        doc = loads(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("feedback"), list):
            raise DecodeError('the body must be {"feedback": [{"request_id", "row", "label"}, …]}')
        items: list[Any] = doc["feedback"]
        if len(items) > self.settings.max_items:
            raise PayloadTooLarge(
                f"{len(items)} feedback items; the limit is {self.settings.max_items}"
            )
        outcomes: list[Outcome | None] = [None] * len(items)
        messages: dict[int, str] = {}
        pending: list[tuple[int, str, Lookup, Any]] = []
        for i, item in enumerate(items):
            parsed = self._parse(i, item)
            if isinstance(parsed, str):
                outcomes[i] = "invalid"
                messages[i] = parsed
                self._metrics(item).outcomes["invalid"].inc()
                continue
            pending.append(parsed)
        matches = await self.recorder.match([lookup for _, _, lookup, _ in pending])
        for (i, model, lookup, label), match in zip(pending, matches, strict=True):
            quality = self.models[model]
            outcomes[i] = match.outcome
            quality.metrics.outcomes[match.outcome].inc()
            if match.outcome == "matched" and match.prediction is not None:
                scored = score_pair(quality.spec, match.prediction.value, label)
                if isinstance(scored, Scored):
                    quality.window.add(scored)
                    quality.metrics.count(scored)
                else:
                    messages[i] = f"matched but not scored: {scored}"
            elif match.outcome != "matched":
                messages[i] = _explain(match.outcome, lookup)
        counts = dict.fromkeys(OUTCOMES, 0)
        for o in outcomes:
            if o is not None:
                counts[o] += 1
        details = [
            {"index": i, "outcome": outcomes[i], "message": msg}
            for i, msg in sorted(messages.items())[:MAX_DETAILS]
        ]
        if counts["unknown"] or counts["invalid"]:
            log.info("feedback.unmatched", **{k: v for k, v in counts.items() if v})
        return {"received": len(items), "outcomes": counts, "details": details}

    def _metrics(self, item: Any) -> ModelFeedbackMetrics:
        name = item.get("model") if isinstance(item, dict) else None
        model = self.models.get(name) if isinstance(name, str) else None
        if model is None and name is None and self.default is not None:
            model = self.models[self.default]
        return model.metrics if model is not None else self.other

    def _parse(self, i: int, item: Any) -> tuple[int, str, Lookup, Any] | str:
        where = f"feedback[{i}]"
        if not isinstance(item, dict):
            return f"{where} must be an object"
        name = item.get("model", self.default)
        if name is None:
            return f"{where}: 'model' is required (several models are monitored)"
        if not isinstance(name, str) or name not in self.models:
            return f"{where}: no profiled model named {str(name)[:64]!r}"
        if "label" not in item:
            return f"{where}: 'label' is missing"
        label = item["label"]
        problem = _label_problem(self.models[name].spec, label)
        if problem:
            return f"{where}: {problem}"
        request_id, key, row = item.get("request_id"), item.get("key"), item.get("row", 0)
        if key is not None:
            if self.settings.key_field is None:
                return f"{where}: 'key' needs feedback.key_field to be configured"
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                return f"{where}: 'key' must be a string or an integer"
            return i, name, Lookup(name, key=str(key)), label
        if not isinstance(request_id, str) or not request_id:
            return f"{where}: 'request_id' (a string) or 'key' is required"
        if type(row) is not int or row < 0:
            return f"{where}: 'row' must be a non-negative integer"
        return i, name, Lookup(name, request_id, row), label


def _explain(outcome: Outcome, lookup: Lookup) -> str:
    what = (
        f"key {lookup.key!r}"
        if lookup.key is not None
        else f"request_id {lookup.request_id!r} row {lookup.row}"
    )
    if outcome == "unknown":
        return f"no prediction for {what}: never served by this sidecar's store, or evicted"
    if outcome == "duplicate":
        return f"the prediction for {what} already has a label"
    return f"the prediction for {what} is older than feedback.ttl_seconds"


__all__ = ["OTHER_BIN", "FeedbackService", "ModelQuality"]
