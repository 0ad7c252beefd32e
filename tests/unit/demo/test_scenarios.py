"""Each traffic scenario changes the rows (or the model server's knobs) the way it says."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from app.demo.data import EMPLOYMENT, FEATURES, generate, rows
from app.demo.model import BUGGY_VERSION, GOOD_VERSION
from app.demo.model_server import ServerState
from app.demo.scenarios import (
    AGE_SHIFT_YEARS,
    INCOME_FACTOR,
    INVALID_AGE,
    NEW_EMPLOYMENT,
    SCENARIOS,
    SLOW_DELAY_MS,
    by_name,
    make_invalid,
    plan,
)

N = 2000


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return rows(generate(N, seed=11), FEATURES)


def play(name: str, base: list[dict[str, Any]]) -> list[dict[str, Any]]:
    before = copy.deepcopy(base)
    out = by_name(name).transform(base, random.Random(0))
    assert base == before, "a transformer must not modify its input"
    assert len(out) == len(base)
    return out


def share(values: list[Any], predicate: Any) -> float:
    return sum(1 for v in values if predicate(v)) / len(values)


def test_baseline_leaves_rows_as_they_are(base: list[dict[str, Any]]) -> None:
    assert play("baseline", base) == base


def test_covariate_shift_makes_every_applicant_older(base: list[dict[str, Any]]) -> None:
    out = play("covariate_shift", base)
    assert [r["age"] for r in out] == [r["age"] + AGE_SHIFT_YEARS for r in base]
    assert max(r["age"] for r in out) > max(r["age"] for r in base)  # past the training range


def test_new_category_brings_values_outside_the_training_domain(base: list[dict[str, Any]]) -> None:
    out = play("new_category", base)
    assert NEW_EMPLOYMENT not in EMPLOYMENT
    assert share(out, lambda r: r["employment"] == NEW_EMPLOYMENT) == pytest.approx(0.4, abs=0.04)
    changed = [(a, b) for a, b in zip(base, out, strict=True) if a != b]
    assert all(b == {**a, "employment": NEW_EMPLOYMENT} for a, b in changed)


def test_missing_feature_nulls_most_incomes(base: list[dict[str, Any]]) -> None:
    out = play("missing_feature", base)
    before = share(base, lambda r: r["monthly_income"] is None)
    after = share(out, lambda r: r["monthly_income"] is None)
    assert before < 0.1
    assert after == pytest.approx(0.6 + 0.4 * before, abs=0.04)
    assert all(
        b == {**a, "monthly_income": b["monthly_income"]} for a, b in zip(base, out, strict=True)
    )


def test_unit_change_sends_a_yearly_income(base: list[dict[str, Any]]) -> None:
    out = play("unit_change", base)
    for a, b in zip(base, out, strict=True):
        income = a["monthly_income"]
        assert b["monthly_income"] == (None if income is None else income * INCOME_FACTOR)
        assert {k: v for k, v in b.items() if k != "monthly_income"} == {
            k: v for k, v in a.items() if k != "monthly_income"
        }


@pytest.mark.parametrize("name", ["buggy_model", "slow_upstream"])
def test_upstream_scenarios_keep_inputs_clean(name: str, base: list[dict[str, Any]]) -> None:
    assert play(name, base) == base


def test_scenario_knobs_are_ones_the_model_server_accepts() -> None:
    state = ServerState(
        "loan",
        {GOOD_VERSION: object(), BUGGY_VERSION: object()},  # type: ignore[dict-item]
        GOOD_VERSION,
    )
    for scenario in SCENARIOS:
        state.control(dict(scenario.control))
        expected_version = BUGGY_VERSION if scenario.name == "buggy_model" else GOOD_VERSION
        expected_delay = SLOW_DELAY_MS if scenario.name == "slow_upstream" else 0.0
        assert (state.version, state.delay_ms) == (expected_version, expected_delay), scenario.name


def test_invalid_sprinkle_spells_one_age_out(base: list[dict[str, Any]]) -> None:
    batch = base[:10]
    out = make_invalid(batch, random.Random(3))
    assert [r["age"] for r in out].count(INVALID_AGE) == 1
    assert all(isinstance(r["age"], int) for r in batch)
    assert make_invalid([], random.Random(0)) == []


def test_scenarios_are_described_and_the_plan_fills_the_duration() -> None:
    names = [s.name for s in SCENARIOS]
    assert names == [
        "baseline", "covariate_shift", "new_category", "missing_feature", "unit_change",
        "buggy_model", "slow_upstream",
    ]  # fmt: skip
    assert all(s.description and "\n" not in s.description and s.share > 0 for s in SCENARIOS)
    steps = plan(90.0)
    assert [s.name for s, _ in steps] == names
    assert sum(seconds for _, seconds in steps) == pytest.approx(90.0)
    with pytest.raises(KeyError, match="unknown scenario"):
        by_name("meteor_strike")
