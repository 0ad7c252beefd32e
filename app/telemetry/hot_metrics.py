"""Lock-free counters and histograms for the request path, exported by a collector.

prometheus_client's children take a lock on every `inc`/`observe` (and a histogram scans its
buckets): a few microseconds per request. The request path runs on one event loop, so plain
Python numbers suffice; the collector reads them at scrape time. Same `labels(...)` API, so
callers pre-bind children exactly as with prometheus_client.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry


def cumulative_buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, int]]:
    """Per-bucket counts (the last one past every bound) as cumulative `(le, count)` pairs."""
    out, running = [], 0
    for bound, c in zip([*bounds, float("inf")], counts, strict=True):
        running += c
        out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
    return out


class HotCounter:
    """A counter child: a float that only grows."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HotHistogram:
    """A histogram child: per-bucket counts (`le` semantics) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class _Family(Collector):
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        registry.register(self)

    def describe(self) -> Iterable[Metric]:
        return []


class HotCounterFamily(_Family):
    """`name_total` with labels; children from `labels(...)`."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.children: dict[tuple[str, ...], HotCounter] = {}
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, *values: str) -> HotCounter:
        return self.children.setdefault(tuple(values), HotCounter())

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self.children.items()):
            family.add_metric(list(values), child.value)
        yield family


class HotHistogramFamily(_Family):
    """A histogram with labels and fixed buckets; children from `labels(...)`."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        self.buckets = list(buckets)
        self.children: dict[tuple[str, ...], HotHistogram] = {}
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, *values: str) -> HotHistogram:
        return self.children.setdefault(tuple(values), HotHistogram(self.buckets))

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self.children.items()):
            cumulative = cumulative_buckets(self.buckets, list(child.counts))
            family.add_metric(list(values), cumulative, sum_value=child.sum)
        yield family
