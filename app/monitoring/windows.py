"""Bounded windows of recent serving values, per feature and model output.

Updated on the request path with batch-sized slice writes (O(1) per value, no allocation per
value); read by snapshots that copy them, oldest first, for the drift cycle.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from app.monitoring.drift_types import FeatureSample, ModelSnapshot
from app.monitoring.feature_checks import ColumnResult, FeatureCheck
from app.monitoring.profile import Kind


class Ring:
    """A fixed-capacity ring of numbers (float64 or small ints), with optional arrival times."""

    def __init__(self, capacity: int, dtype: Any = np.float64, timed: bool = False) -> None:
        self.capacity = capacity
        self.buf = np.zeros(capacity, dtype=dtype)
        self.times = np.zeros(capacity, dtype=np.float64) if timed else None
        self.pos = 0
        self.size = 0

    def extend(self, values: Sequence[float] | np.ndarray[Any, Any], now: float = 0.0) -> None:
        """Append values (the oldest fall out when full)."""
        n = len(values)
        if n == 0:
            return
        cap = self.capacity
        if n >= cap:
            values = values[n - cap :]
            n = cap
        end = self.pos + n
        if end <= cap:
            self.buf[self.pos : end] = values
            if self.times is not None:
                self.times[self.pos : end] = now
        else:
            first = cap - self.pos
            self.buf[self.pos :] = values[:first]
            self.buf[: n - first] = values[first:]
            if self.times is not None:
                self.times[self.pos :] = now
                self.times[: n - first] = now
        self.pos = end % cap
        self.size = min(cap, self.size + n)

    def snapshot(self, since: float | None = None) -> np.ndarray[Any, Any]:
        """A copy of the contents, oldest first (only entries at or after `since` if timed)."""
        if self.size < self.capacity:
            out = self.buf[: self.size].copy()
            times = self.times[: self.size] if self.times is not None else None
        else:
            out = np.concatenate((self.buf[self.pos :], self.buf[: self.pos]))
            times = (
                np.concatenate((self.times[self.pos :], self.times[: self.pos]))
                if self.times is not None
                else None
            )
        if since is not None and times is not None:
            out = out[times >= since]
        return out

    @property
    def nbytes(self) -> int:
        return self.buf.nbytes + (self.times.nbytes if self.times is not None else 0)


class FeatureWindow:
    """The window of one feature: values (or bin indices) and a row-level missing indicator."""

    def __init__(
        self, check: FeatureCheck, rows: int, timed: bool, text_max_chars: int = 1000
    ) -> None:
        self.name = check.name
        self.kind: Kind = check.kind  # type: ignore[assignment]
        self.check = check
        self.binned = check.kind in ("categorical", "boolean")
        # Bins of categorical features fit in int16 (top-K is small); values are float64.
        self.values = Ring(rows, np.int16 if self.binned else np.float64, timed)
        self.missing = Ring(rows, np.bool_, timed)
        self.texts: deque[str] | None = deque(maxlen=rows) if check.kind == "text" else None
        self.text_max_chars = text_max_chars
        self._bin_index = np.arange(len(check.bin_labels), dtype=np.int16)

    def observe(self, result: ColumnResult, raw: list[Any] | None, now: float) -> None:
        """Add one forwarded batch's column."""
        counts = result.bin_counts
        n_missing = counts[self.check.missing_bin]
        n_rows = sum(counts)
        if n_rows:
            flags = np.zeros(n_rows, dtype=np.bool_)
            flags[:n_missing] = True
            self.missing.extend(flags, now)
        if self.binned:
            self.values.extend(np.repeat(self._bin_index, counts), now)
        elif result.clean:
            self.values.extend(result.clean, now)
        if self.texts is not None and raw is not None:
            cut = self.text_max_chars
            self.texts.extend(v if len(v) <= cut else v[:cut] for v in raw if type(v) is str)

    def sample(self, since: float | None) -> FeatureSample:
        """Copy the window into an immutable sample."""
        missing = self.missing.snapshot(since)
        values = self.values.snapshot(since)
        if self.binned:
            counts = np.bincount(values, minlength=len(self.check.bin_labels))
            return FeatureSample(
                self.name,
                self.kind,
                n_rows=int(missing.size),
                n_missing=int(missing.sum()),
                bin_counts=tuple(int(c) for c in counts),
            )
        return FeatureSample(
            self.name,
            self.kind,
            n_rows=int(missing.size),
            n_missing=int(missing.sum()),
            values=values,
            texts=tuple(self.texts) if self.texts is not None else None,
        )

    @property
    def nbytes(self) -> int:
        text = sum(len(t) for t in self.texts) if self.texts is not None else 0
        return self.values.nbytes + self.missing.nbytes + text


class ModelWindows:
    """All windows of one model: one per feature and one for the monitored output."""

    def __init__(
        self,
        model: str,
        checks: list[FeatureCheck],
        prediction: FeatureCheck | None,
        rows: int = 5000,
        seconds: float | None = None,
    ) -> None:
        self.model = model
        self.seconds = seconds
        timed = seconds is not None
        self.features = [FeatureWindow(c, rows, timed) for c in checks]
        self.by_name = {w.name: w for w in self.features}
        self.prediction = FeatureWindow(prediction, rows, timed) if prediction else None

    def observe_inputs(self, columns: dict[str, ColumnResult], raw: dict[str, list[Any]]) -> None:
        """Add the columns of one forwarded request."""
        now = time.monotonic() if self.seconds is not None else 0.0
        for window in self.features:
            result = columns.get(window.name)
            if result is not None:
                window.observe(result, raw.get(window.name), now)

    def observe_predictions(self, result: ColumnResult) -> None:
        """Add one response's predictions."""
        if self.prediction is not None:
            now = time.monotonic() if self.seconds is not None else 0.0
            self.prediction.observe(result, None, now)

    def snapshot(self) -> ModelSnapshot:
        """Copies of every window (cheap: array copies), for the drift cycle."""
        since = time.monotonic() - self.seconds if self.seconds is not None else None
        return ModelSnapshot(
            model=self.model,
            taken_at=time.time(),
            features=tuple(w.sample(since) for w in self.features),
            prediction=self.prediction.sample(since) if self.prediction else None,
        )

    @property
    def nbytes(self) -> int:
        """Memory held by the windows (bounded by rows x features)."""
        total = sum(w.nbytes for w in self.features)
        return total + (self.prediction.nbytes if self.prediction else 0)
