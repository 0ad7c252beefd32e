"""`/metrics` text, byte for byte what prometheus_client's `generate_latest` writes, faster.

Most of a scrape's time in `generate_latest` goes to escaping and validating every label of
every sample again. Our series are fixed by the profiles, so each sample's `name{labels}`
prefix is rendered once (with prometheus_client's own escaping) and reused; a scrape then only
formats values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

_ESCAPING = openmetrics.UNDERSCORES
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")
MAX_CACHED_PREFIXES = 200_000


class FixedLabels(dict[str, str]):
    """The labels of a series that lives as long as the process (its label values come from the
    profile). A collector keeps one per series and reuses it every scrape; the exposition then
    renders its `name{labels}` prefix once and keeps it on the object."""

    __slots__ = ("prefixes",)

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self.prefixes: dict[str, str] = {}


def fixed_sample(
    family: Metric, suffix: str, cache: dict[tuple[str, ...], FixedLabels], key: tuple[str, ...],
    value: float,
) -> None:  # fmt: skip
    """Append a sample to `family` (as its `add_metric` would) with cached `FixedLabels`."""
    labels = cache.get(key)
    if labels is None:
        labels = cache[key] = FixedLabels(zip(family._labelnames, key[1:], strict=True))  # type: ignore[attr-defined]
    family.samples.append(Sample(family.name + suffix, labels, value))


class Exposition:
    """Renders a registry in the Prometheus text format, caching sample prefixes."""

    def __init__(self, registry: Collector) -> None:
        self.registry = registry
        self._prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}

    def _prefix(self, sample: Sample) -> str:
        key = (sample.name, tuple(sample.labels.items()))
        prefix = self._prefixes.get(key)
        if prefix is None:
            if len(self._prefixes) >= MAX_CACHED_PREFIXES:
                self._prefixes.clear()
            prefix = _render_prefix(sample)
            self._prefixes[key] = prefix
        return prefix

    def _line(self, sample: Sample) -> str:
        labels = sample.labels
        if type(labels) is FixedLabels:
            prefix = labels.prefixes.get(sample.name)
            if prefix is None:
                prefix = labels.prefixes[sample.name] = _render_prefix(sample)
        else:
            prefix = self._prefix(sample)
        if sample.timestamp is not None:
            timestamp = f" {int(float(sample.timestamp) * 1000):d}"
            return f"{prefix} {_go_float(sample.value)}{timestamp}\n"
        return f"{prefix} {_go_float(sample.value)}\n"

    async def render_off_loop(self) -> bytes:
        """`render()` on a worker thread, so a scrape holds the event loop for at most a GIL
        switch interval (5 ms) at a time instead of its whole render time.

        Collectors read state that the loop updates. Values read mid-update are fine (a scrape
        is a point in time); should a collector's dict change size under it, the render is done
        again on the loop, where nothing else runs.
        """
        try:
            return await asyncio.to_thread(self.render)
        except RuntimeError:  # "dictionary changed size during iteration"
            return self.render()

    def render(self) -> bytes:
        """The exposition text of every collector (as `generate_latest(registry)`)."""
        output: list[str] = []
        for metric in self.registry.collect():
            mname, mtype = metric.name, metric.type
            if mtype == "counter":
                mname += "_total"
            elif mtype == "info":
                mname, mtype = mname + "_info", "gauge"
            elif mtype == "stateset":
                mtype = "gauge"
            elif mtype == "gaugehistogram":
                mtype = "histogram"
            elif mtype == "unknown":
                mtype = "untyped"
            doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
            escaped = openmetrics.escape_metric_name(mname, _ESCAPING)
            output.append(f"# HELP {escaped} {doc}\n# TYPE {escaped} {mtype}\n")
            late: dict[str, list[str]] = {}
            for s in metric.samples:
                for suffix in _OM_SUFFIXES:
                    if s.name == metric.name + suffix:
                        late.setdefault(suffix, []).append(self._line(s))
                        break
                else:
                    output.append(self._line(s))
            for suffix, lines in sorted(late.items()):
                name = openmetrics.escape_metric_name(metric.name + suffix, _ESCAPING)
                output.append(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")
                output.extend(lines)
        return "".join(output).encode("utf-8")


def _render_prefix(sample: Sample) -> str:
    name = openmetrics.escape_metric_name(sample.name, _ESCAPING)
    if not sample.labels:
        return name
    labels = ",".join(
        f'{openmetrics.escape_label_name(k, _ESCAPING)}="{_escape_value(v)}"'
        for k, v in sorted(sample.labels.items())
    )
    return f"{name}{{{labels}}}"


def _escape_value(value: str) -> str:
    # The same call generate_latest makes (its third argument is a flag in practice).
    escaped: str = openmetrics._escape(value, openmetrics.ALLOWUTF8, False)  # type: ignore[arg-type]
    return escaped


def _go_float(value: float) -> str:
    if type(value) is int and -_EXACT_INT < value < _GO_EXPONENT:
        return f"{value}.0"  # what floatToGoString writes for these, without the float round trip
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


_EXACT_INT = 10**15
_GO_EXPONENT = 10**6
"""floatToGoString writes positive numbers from a million on with an exponent."""
