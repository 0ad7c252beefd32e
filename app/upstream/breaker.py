"""An optional circuit breaker: while the model server is down, fail fast instead of waiting.

```
closed ──(N transport failures in a row)──▶ open ──(open_seconds pass)──▶ half-open
  ▲                                          ▲                               │
  └────────(the trial request succeeds)──────┼─────(the trial fails)─────────┘
```

In half-open state one trial request goes through while the others still fail fast. A
readiness probe that succeeds closes the breaker at once (the model server is back). Only
transport failures count (cannot connect, connection broken, timeout, not HTTP): an answer
with any status, 5xx included, is the model server speaking and is passed through.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive transport failures; `allow()` says whether a request may go out."""

    def __init__(
        self,
        failures: int,
        open_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] = lambda _: None,
    ) -> None:
        self.threshold = failures
        self.open_seconds = open_seconds
        self.clock = clock
        self.on_change = on_change
        self.state = BreakerState.CLOSED
        self.failures = 0
        """Consecutive transport failures while closed."""
        self.opened_at = 0.0
        self.rejected = 0
        """Requests failed fast while open."""
        self._trial_out = False

    def retry_after(self) -> float:
        """Seconds until the next trial request (0 when not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(self.opened_at + self.open_seconds - self.clock(), 0.0)

    def allow(self) -> bool:
        """True when a request may go to the model server now. A True in half-open state makes
        that request the trial: report it with `succeeded`, `failed` or `abandoned`."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self.clock() - self.opened_at < self.open_seconds:
                self.rejected += 1
                return False
            self._set(BreakerState.HALF_OPEN)
        if self._trial_out:
            self.rejected += 1
            return False
        self._trial_out = True
        return True

    def succeeded(self) -> None:
        """The model server answered (any status)."""
        self.failures = 0
        self._trial_out = False
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def failed(self) -> None:
        """A transport failure: cannot connect, connection broken, timeout, not HTTP."""
        self._trial_out = False
        if self.state is BreakerState.HALF_OPEN:
            self._open()
            return
        if self.state is BreakerState.CLOSED:
            self.failures += 1
            if self.failures >= self.threshold:
                self._open()

    def abandoned(self) -> None:
        """The request was cancelled before an outcome (the client went away): no verdict."""
        self._trial_out = False

    def _open(self) -> None:
        self.opened_at = self.clock()
        self.failures = 0
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is not self.state:
            self.state = state
            self.on_change(state)
