"""Runs drift cycles off the request path: snapshot the windows on the event loop (array
copies), test them in a worker process (a thread would compete with the loop for the GIL), and
publish an immutable report. A slow, failing or crashed cycle is counted, never felt by requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import time
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from types import MappingProxyType

from app.monitoring.drift_types import DriftConfig, ModelDriftReport, ModelSnapshot
from app.monitoring.profile import Profile
from app.monitoring.windows import ModelWindows

# Worker-process state, set once by the pool initializer (profiles are sent once, not per cycle).
_worker_profiles: dict[str, Profile] = {}
_worker_config: list[DriftConfig] = []


def _init_worker(profiles_json: dict[str, str], config: DriftConfig) -> None:
    _worker_profiles.clear()
    for name, text in profiles_json.items():
        _worker_profiles[name] = Profile.model_validate_json(text)
    _worker_config[:] = [config]


def _warm_up() -> bool:
    from app.monitoring import drift  # noqa: F401 (import scipy once, before the first cycle)

    return True


def run_cycle(
    snapshots: list[ModelSnapshot],
    profiles: Mapping[str, Profile] | None = None,
    config: DriftConfig | None = None,
) -> list[ModelDriftReport]:
    """Evaluate every model's snapshot (in the worker, or inline when given the profiles)."""
    from app.monitoring.drift import evaluate

    profiles = _worker_profiles if profiles is None else profiles
    config = config or _worker_config[0]
    return [evaluate(profiles[s.model], s, config) for s in snapshots]


class DriftScheduler:
    """Periodic drift cycles in a one-process pool; the latest reports in `latest`."""

    def __init__(
        self,
        windows: Mapping[str, ModelWindows],
        profiles: Mapping[str, Profile],
        config: DriftConfig,
        interval_seconds: float,
        timeout_seconds: float,
        on_cycle: Callable[[float], None],
        on_error: Callable[[], None],
        cycle: Callable[[list[ModelSnapshot]], list[ModelDriftReport]] = run_cycle,
    ) -> None:
        """Args:
        cycle: the function run in the worker (module-level, so it pickles by reference).
        """
        self.windows = windows
        self._cycle = cycle
        self.profiles = profiles
        self.config = config
        self.interval = interval_seconds
        self.timeout = timeout_seconds
        self._on_cycle = on_cycle
        self._on_error = on_error
        self.latest: Mapping[str, ModelDriftReport] = MappingProxyType({})
        self.cycles = 0
        self.errors = 0
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        payload = {name: p.model_dump_json() for name, p in self.profiles.items()}
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(payload, self.config),
        )
        pool.submit(_warm_up)
        return pool

    def start(self) -> None:
        """Start the worker process and the periodic task (call from the app's lifespan)."""
        if not self.windows:
            return
        self._pool = self._new_pool()
        self._task = asyncio.create_task(self._loop(), name="infersight-drift")

    async def stop(self) -> None:
        """Stop the periodic task and the worker process."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._pool is not None:
            self._kill_pool()

    def _kill_pool(self) -> None:
        pool = self._pool
        self._pool = None
        if pool is None:
            return
        # A running cycle cannot be cancelled: end its process, then the pool.
        for proc in list(getattr(pool, "_processes", {}).values()):
            with contextlib.suppress(Exception):
                proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.run_cycle()

    async def run_cycle(self) -> bool:
        """Run one cycle now; True when it produced a report."""
        async with self._lock:
            if self._pool is None:
                self._pool = self._new_pool()
            start = time.perf_counter()
            snapshots = [w.snapshot() for w in self.windows.values()]
            loop = asyncio.get_running_loop()
            try:
                future = loop.run_in_executor(self._pool, self._cycle, snapshots)
                reports = await asyncio.wait_for(future, self.timeout)
            except asyncio.CancelledError:
                raise
            except (TimeoutError, BrokenProcessPool):
                self._count_error()
                self._kill_pool()
                return False
            except Exception:
                self._count_error()
                return False
            self.latest = MappingProxyType({r.model: r for r in reports})
            self.cycles += 1
            self._on_cycle(time.perf_counter() - start)
            return True

    def _count_error(self) -> None:
        self.errors += 1
        self._on_error()


class NullDriftScheduler:
    """Drift turned off: the same interface, no windows, no cycles."""

    latest: Mapping[str, ModelDriftReport] = MappingProxyType({})
    cycles = 0
    errors = 0

    def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        """Nothing to stop."""

    async def run_cycle(self) -> bool:
        """No cycle: drift is off."""
        return False
