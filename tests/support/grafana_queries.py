"""The queries of the Grafana dashboards, as a test sees them.

`panel_queries` lists every panel target; `substitute` fills Grafana's built-in and template
variables the way Grafana would before sending a query, so a test can run it against a real
Prometheus (Grafana itself is not installable here). The small parsers below let unit tests
check what a query refers to: PromQL metric names, and the request-log fields a LogQL query
reads through `| json`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NOT_EXPORTED_YET: tuple[str, ...] = ()
"""Metric names (prefixes) that a later release exports: their panels may be empty (none now:
every panel must show data in the end-to-end test)."""


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    """The dashboard's title."""
    panel_id: int
    panel: str
    """The panel's title."""
    datasource: str
    """The datasource uid (`prometheus`, `loki`)."""
    expr: str
    ref_id: str
    instant: bool

    @property
    def expects_data(self) -> bool:
        """False for panels on metrics of later issues (they show no data until then)."""
        return not any(name.startswith(NOT_EXPORTED_YET) for name in metric_names(self.expr))


def _panels(panels: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        if p.get("type") == "row":
            yield from _panels(p.get("panels", []))  # collapsed rows hold their panels
        else:
            yield p


def panel_queries(dashboard_json: dict[str, Any]) -> list[PanelQuery]:
    """Every target of every panel (rows included, hidden targets skipped)."""
    out = []
    for p in _panels(dashboard_json.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("hide"):
                continue
            ds = t.get("datasource") or p.get("datasource") or {}
            out.append(
                PanelQuery(
                    dashboard=dashboard_json["title"],
                    panel_id=p["id"],
                    panel=p.get("title", ""),
                    datasource=ds.get("uid", "") if isinstance(ds, dict) else str(ds),
                    expr=t.get("expr", ""),
                    ref_id=t.get("refId", ""),
                    instant=bool(t.get("instant")) or t.get("queryType") == "instant",
                )
            )
    return out


_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)|\[\[(\w+)(?::(\w+))?\]\]")


def substitute(
    expr: str,
    variables: Mapping[str, str | Sequence[str]],
    rate_interval: str = "1m",
    *,
    interval: str | None = None,
    range_: str = "1h",
) -> str:
    """Fill Grafana's variables as Grafana would before sending the query.

    `$__rate_interval`, `$__interval` (default: the rate interval) and `$__range` become
    durations; `$var`, `${var}`, `${var:format}` and `[[var]]` take the given value. A string
    value is used as it is (pass `"a|b"` for several values of a regex matcher); a sequence
    becomes a regex alternation `(a|b)` of its escaped values, as Grafana writes a multi-value
    variable into a PromQL regex (`:raw` joins with `|` unescaped). An unknown variable raises
    KeyError, so a query never reaches Prometheus with a `$` left in it.
    """
    builtins = {
        "__rate_interval": rate_interval,
        "__interval": interval or rate_interval,
        "__range": range_,
    }

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3) or m.group(4)
        fmt = m.group(2) or m.group(5) or ""
        if name in builtins:
            return builtins[name]
        if name not in variables:
            raise KeyError(f"no value for ${name} in {expr!r}")
        v = variables[name]
        if isinstance(v, str):
            return v
        if fmt == "raw":
            return "|".join(v)
        escaped = [re.escape(x) for x in v]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    return _VARIABLE.sub(value, expr)


# --- PromQL -----------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
    | {"and", "or", "unless", "offset", "inf", "nan"}
)


def mask_strings(expr: str) -> tuple[str, list[str]]:
    """The expression with each string literal replaced by `"§n"`, and the literals' contents."""
    found: list[str] = []

    def keep(m: re.Match[str]) -> str:
        found.append(m.group(0)[1:-1])
        return f'"§{len(found) - 1}"'

    return _STRING.sub(keep, expr), found


def balanced(expr: str) -> bool:
    """Whether (), [] and {} nest properly outside string literals."""
    masked, _ = mask_strings(expr)
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for c in masked:
        if c in "([{":
            stack.append(c)
        elif c in pairs and (not stack or stack.pop() != pairs[c]):
            return False
    return not stack


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, labels or keywords)."""
    masked, _ = mask_strings(expr)
    masked = re.sub(r"\{[^{}]*\}", " ", masked)  # label matchers
    masked = re.sub(r"\[[^\]]*\]", " ", masked)  # range and subquery windows
    masked = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1 ", masked
    )
    names = set()
    for m in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", masked):
        rest = masked[m.end() :].lstrip()
        if m.group(0) in _KEYWORDS or rest.startswith("(") or re.match(r"(by|without)\b", rest):
            continue  # keywords, functions and aggregations (`sum by (x) (...)`)
        names.add(m.group(0))
    return names


# --- LogQL ------------------------------------------------------------------------------------


@dataclass
class LogqlFields:
    """What a LogQL query reads from a JSON log line."""

    plain_json: bool = False
    """A `| json` stage without parameters (every top-level field becomes a label)."""
    json_params: dict[str, str] = field(default_factory=dict)
    """`| json label="path"` extractions: label → JSON path."""
    referenced: set[str] = field(default_factory=set)
    """Labels used by label filters, `unwrap`, `line_format` and `by (...)` groupings."""


_LABEL_FILTER = re.compile(r"(?<![\w.])([a-zA-Z_]\w*)\s*(?:=~|!~|!=|==|>=|<=|=|>|<)")
_STAGES_WITHOUT_FILTERS = ("json", "logfmt", "unwrap", "line_format", "label_format")


def logql_fields(expr: str) -> LogqlFields:
    """Parse the fields a (variable-free) LogQL query extracts and uses."""
    masked, strings = mask_strings(expr)
    out = LogqlFields()
    for m in re.finditer(r"\b(?:by|without)\s*\(([^)]*)\)", masked):
        out.referenced.update(x.strip() for x in m.group(1).split(",") if x.strip())
    masked = re.sub(r"\b(?:by|without)\s*\([^)]*\)", " ", masked)
    masked = re.sub(r"\{[^{}]*\}", " ", masked)  # stream selectors
    masked = re.sub(r"\[[^\]]*\]", " ", masked)  # ranges
    masked = re.sub(r'\|[=~]\s*"§\d+"', " ", masked)  # line filters
    for stage in re.split(r"\|(?![=~])", masked)[1:]:
        stage = stage.strip()
        word = stage.split(None, 1)[0] if stage else ""
        if word == "json":
            params = re.findall(r'(\w+)\s*=\s*"§(\d+)"', stage)
            if not params:
                out.plain_json = True
            for label, i in params:
                out.json_params[label] = strings[int(i)].replace('\\"', '"')
        elif word == "unwrap":
            unwrap = re.match(r"unwrap\s+(?:\w+\()?(\w+)", stage)
            if unwrap:
                out.referenced.add(unwrap.group(1))
        elif word == "line_format":
            template = re.match(r'line_format\s+"§(\d+)"', stage)
            if template:
                text = strings[int(template.group(1))]
                out.referenced.update(re.findall(r"\{\{-?\s*\.(\w+)", text))
        elif word not in _STAGES_WITHOUT_FILTERS:
            out.referenced.update(_LABEL_FILTER.findall(stage))
    out.referenced.discard("__error__")
    return out


def json_path(document: Any, path: str) -> Any:
    """Follow a LogQL `| json` path (`a.b`, `a["b"]`, `a[0]`); KeyError when it leads nowhere."""
    tokens = re.findall(r'\["((?:[^"\\]|\\.)*)"\]|\[(\d+)\]|\.?([A-Za-z_]\w*)', path)
    if "".join(f"{a}{b}{c}" for a, b, c in tokens) == "":
        raise KeyError(path)
    node = document
    for key, index, name in tokens:
        if index:
            if not isinstance(node, list) or int(index) >= len(node):
                raise KeyError(path)
            node = node[int(index)]
        else:
            k = key or name
            if not isinstance(node, dict) or k not in node:
                raise KeyError(path)
            node = node[k]
    return node
