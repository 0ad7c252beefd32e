"""Traffic scenarios: what changes in the requests (a row transformer) or in the model server
(its demo knobs), and what a user should see in InferSight while it plays.

Throughout, a shadow candidate gets a mirror of the traffic and the answered rows' true labels
reach the sidecar a few seconds late (delayed ground truth), so the buggy release shows up in
the served version, the predictions, the shadow's agreement, the parity probes and, last, in
the accuracy measured from feedback.

Rows are dicts of wire values (`data.rows`). Transformers return new rows and never touch their
input. Every scenario also gets a sprinkle of invalid requests (`make_invalid`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from app.demo.model import BUGGY_VERSION, GOOD_VERSION

Row = dict[str, Any]
Transform = Callable[[list[Row], random.Random], list[Row]]

AGE_SHIFT_YEARS = 15
NEW_EMPLOYMENT = "gig-worker"
NEW_CATEGORY_SHARE = 0.4
MISSING_INCOME_SHARE = 0.6
INCOME_FACTOR = 12
SLOW_DELAY_MS = 250.0
INVALID_REQUEST_SHARE = 0.03
"""Share of requests, in every scenario, that carry a wrongly typed value (answered 422)."""
INVALID_AGE = "forty"


def _normal(**knobs: Any) -> Mapping[str, Any]:
    return MappingProxyType({"version": GOOD_VERSION, "delay_ms": 0.0, **knobs})


def unchanged(rows: list[Row], rng: random.Random) -> list[Row]:
    """Rows as they are (copies)."""
    return [dict(r) for r in rows]


def older_applicants(rows: list[Row], rng: random.Random) -> list[Row]:
    """Covariate shift: every applicant `AGE_SHIFT_YEARS` older."""
    return [{**r, "age": r["age"] + AGE_SHIFT_YEARS} for r in rows]


def new_employment(rows: list[Row], rng: random.Random) -> list[Row]:
    """A category never seen in training in about `NEW_CATEGORY_SHARE` of rows."""
    return [
        {**r, "employment": NEW_EMPLOYMENT} if rng.random() < NEW_CATEGORY_SHARE else dict(r)
        for r in rows
    ]


def missing_income(rows: list[Row], rng: random.Random) -> list[Row]:
    """monthly_income null in about `MISSING_INCOME_SHARE` of rows."""
    return [
        {**r, "monthly_income": None} if rng.random() < MISSING_INCOME_SHARE else dict(r)
        for r in rows
    ]


def yearly_income(rows: list[Row], rng: random.Random) -> list[Row]:
    """Unit change: a yearly income sent where a monthly one is expected (x12)."""
    out = []
    for r in rows:
        income = r["monthly_income"]
        out.append({**r, "monthly_income": None if income is None else income * INCOME_FACTOR})
    return out


def make_invalid(rows: list[Row], rng: random.Random) -> list[Row]:
    """One row with a wrongly typed value (age spelled out): the enforce policy answers 422."""
    out = [dict(r) for r in rows]
    if out:
        out[rng.randrange(len(out))]["age"] = INVALID_AGE
    return out


@dataclass(frozen=True)
class Scenario:
    """One phase of the demo's traffic."""

    name: str
    description: str
    """What a user should see in InferSight while it plays."""
    share: float
    """Share of the demo's duration."""
    transform: Transform = unchanged
    control: Mapping[str, Any] = field(default_factory=_normal)
    """Model server knobs (`POST /demo/control`) while it plays."""


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "baseline",
        "Traffic like the training data: bins match the reference; only the sprinkled "
        "wrong-type requests are rejected (422, reason enforce).",
        0.20,
    ),
    Scenario(
        "covariate_shift",
        f"Applicants ~{AGE_SHIFT_YEARS} years older: age's top bins fill far past their "
        "reference share, some ages out_of_range (observed, not rejected).",
        0.13,
        older_applicants,
    ),
    Scenario(
        "new_category",
        f"employment='{NEW_EMPLOYMENT}' in ~{NEW_CATEGORY_SHARE:.0%} of rows: unknown_category "
        "violations and employment's __unseen__ bin far above its reference 0%.",
        0.13,
        new_employment,
    ),
    Scenario(
        "missing_feature",
        f"monthly_income null in ~{MISSING_INCOME_SHARE:.0%} of rows: its __missing__ bin jumps "
        "from ~4% (training had missing incomes, so no rows are rejected).",
        0.13,
        missing_income,
    ),
    Scenario(
        "unit_change",
        f"monthly_income sent as a yearly figure (x{INCOME_FACTOR}): its top bin takes most "
        "rows and out_of_range violations pile up.",
        0.13,
        yearly_income,
    ),
    Scenario(
        "buggy_model",
        f"{BUGGY_VERSION} is deployed mid-run (inverted scores): the sidecar counts a version "
        "change; inputs stay clean but predicted class 1 jumps from ~10% to ~90% of rows, the "
        "shadow candidate disagrees and parity probes mismatch; once the delayed labels arrive, "
        "accuracy falls from ~0.8 to ~0.2.",
        0.14,
        control=_normal(version=BUGGY_VERSION),
    ),
    Scenario(
        "slow_upstream",
        f"{GOOD_VERSION} is back (a rollback: the second version change) but answers "
        f"{SLOW_DELAY_MS:.0f} ms later: request latency p50/p99 rises past "
        f"{SLOW_DELAY_MS:.0f} ms while inputs and predictions look normal.",
        0.14,
        control=_normal(delay_ms=SLOW_DELAY_MS),
    ),
)


def by_name(name: str) -> Scenario:
    """The scenario called `name`.

    Raises:
        KeyError: no such scenario.
    """
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    raise KeyError(f"unknown scenario '{name}' (known: {', '.join(s.name for s in SCENARIOS)})")


def plan(
    duration_seconds: float, scenarios: tuple[Scenario, ...] = SCENARIOS
) -> list[tuple[Scenario, float]]:
    """Each scenario with its seconds of `duration_seconds` (shares are normalised)."""
    total = sum(s.share for s in scenarios)
    return [(s, duration_seconds * s.share / total) for s in scenarios]
