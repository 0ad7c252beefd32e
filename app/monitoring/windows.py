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

STAGE_ROWS = 512
"""Values staged in a Python list before one numpy write: a request of a few rows costs a
list extend (~0.1 µs) instead of numpy calls (~1 µs each)."""


class Ring:
    """A fixed-capacity ring of numbers (float64 or small ints), with optional arrival times.

    Small appends are staged in a plain list and written to the numpy buffer in one go when
    the stage fills or before any read, so the request path makes no numpy call for them.
    """

    def __init__(self, capacity: int, dtype: Any = np.float64, timed: bool = False) -> None:
        self.capacity = capacity
        self.buf = np.zeros(capacity, dtype=dtype)
        self.times = np.zeros(capacity, dtype=np.float64) if timed else None
        self.pos = 0
        self._size = 0
        self._stage: list[Any] = []
        self._stage_runs: list[tuple[int, float]] = []
        """(values, arrival time) runs of the stage, for timed rings."""

    def extend(self, values: Sequence[Any] | np.ndarray[Any, Any], now: float = 0.0) -> None:
        """Append values (the oldest fall out when full)."""
        n = len(values)
        if n == 0:
            return
        stage = self._stage
        if n >= STAGE_ROWS:
            self.flush()
            self._write(np.asarray(values, dtype=self.buf.dtype), now)
            return
        stage.extend(values)
        if self.times is not None:
            self._stage_runs.append((n, now))
        if len(stage) >= STAGE_ROWS:
            self.flush()

    def extend_flags(self, n_true: int, n: int, now: float = 0.0) -> None:
        """Append `n_true` True then `n - n_true` False (missing indicators)."""
        if n <= 0:
            return
        if n >= STAGE_ROWS:
            flags = np.zeros(n, dtype=self.buf.dtype)
            flags[:n_true] = True
            self.extend(flags, now)
            return
        stage = self._stage
        if n_true:
            stage.extend([True] * n_true)
        if n > n_true:
            stage.extend([False] * (n - n_true))
        if self.times is not None:
            self._stage_runs.append((n, now))
        if len(stage) >= STAGE_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the staged values to the buffer."""
        if not self._stage:
            return
        values = np.asarray(self._stage, dtype=self.buf.dtype)
        times: float | np.ndarray[Any, Any] = 0.0
        if self.times is not None:
            runs = self._stage_runs
            times = np.repeat([t for _, t in runs], [c for c, _ in runs])
            self._stage_runs = []
        self._stage = []
        self._write(values, times)

    def _write(self, values: np.ndarray[Any, Any], now: float | np.ndarray[Any, Any]) -> None:
        n = len(values)
        cap = self.capacity
        if n >= cap:
            values = values[n - cap :]
            if isinstance(now, np.ndarray):
                now = now[n - cap :]
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
                head = now[:first] if isinstance(now, np.ndarray) else now
                tail = now[first:] if isinstance(now, np.ndarray) else now
                self.times[self.pos :] = head
                self.times[: n - first] = tail
        self.pos = end % cap
        self._size = min(cap, self._size + n)

    @property
    def size(self) -> int:
        """Values held (staged ones included)."""
        return min(self.capacity, self._size + len(self._stage))

    def snapshot(self, since: float | None = None) -> np.ndarray[Any, Any]:
        """A copy of the contents, oldest first (only entries at or after `since` if timed)."""
        self.flush()
        if self._size < self.capacity:
            out = self.buf[: self._size].copy()
            times = self.times[: self._size] if self.times is not None else None
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
        n_rows = sum(counts)
        if n_rows:
            self.missing.extend_flags(counts[self.check.missing_bin], n_rows, now)
        if self.binned:
            if n_rows >= STAGE_ROWS:
                self.values.extend(np.repeat(self._bin_index, counts), now)
            else:
                indices: list[int] = []
                for i, c in enumerate(counts):
                    if c:
                        indices.extend([i] * c)
                self.values.extend(indices, now)
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
