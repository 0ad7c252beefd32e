"""Synthetic loan applications: the demo's training data and the source of its traffic.

Deterministic for a seed. Columns: age (int), monthly_income (float, ~4% missing),
marital_status and employment (categories), loan_amount (float), has_mortgage (bool),
purpose (short free text), and the label `default` (0/1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

FEATURES = [
    "age",
    "monthly_income",
    "marital_status",
    "employment",
    "loan_amount",
    "has_mortgage",
    "purpose",
]
NUMERIC = ["age", "monthly_income", "loan_amount"]
CATEGORICAL = ["marital_status", "employment"]
BOOLEAN = ["has_mortgage"]
TEXT = ["purpose"]
TARGET = "default"

DTYPES = {
    "age": "int64",
    "monthly_income": "float64",
    "marital_status": "object",
    "employment": "object",
    "loan_amount": "float64",
    "has_mortgage": "bool",
    "purpose": "object",
    TARGET: "int64",
}
"""Column dtypes as pandas would report them for the generated data."""

MARITAL = ["single", "married", "divorced", "widowed"]
MARITAL_P = [0.42, 0.43, 0.11, 0.04]
EMPLOYMENT = ["employed", "self-employed", "unemployed", "retired", "student"]
EMPLOYMENT_P = [0.62, 0.14, 0.07, 0.12, 0.05]
_PURPOSES = [
    "buy a used car for commuting",
    "renovate the kitchen",
    "consolidate credit card debt",
    "pay for a wedding",
    "start a small business",
    "cover medical bills",
    "buy new furniture for the flat",
    "pay university tuition fees",
    "family holiday abroad",
    "repair the roof of the house",
]


def generate(n: int, seed: int = 0) -> dict[str, list[Any]]:
    """Generate `n` labelled loan applications as columns of plain Python values."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 76, size=n)
    employment = rng.choice(EMPLOYMENT, size=n, p=EMPLOYMENT_P)
    income = rng.lognormal(mean=8.0, sigma=0.45, size=n)
    income = np.where(employment == "unemployed", income * 0.3, income)
    income = np.where(employment == "student", income * 0.4, income)
    income = np.round(income, 2)
    marital = rng.choice(MARITAL, size=n, p=MARITAL_P)
    loan = np.round(rng.gamma(shape=2.2, scale=4500.0, size=n), 2)
    mortgage = rng.random(n) < (0.15 + 0.5 * (age > 35))
    purpose = rng.choice(_PURPOSES, size=n)
    # Default risk grows with the loan-to-income ratio and shrinks with age.
    ratio = loan / (income * 12.0)
    logit = -2.2 + 2.5 * ratio - 0.02 * (age - 40) + 0.8 * (employment == "unemployed")
    default = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    income_list: list[float | None] = [float(x) for x in income]
    for i in np.flatnonzero(rng.random(n) < 0.04):
        income_list[int(i)] = None
    return {
        "age": [int(x) for x in age],
        "monthly_income": income_list,
        "marital_status": [str(x) for x in marital],
        "employment": [str(x) for x in employment],
        "loan_amount": [float(x) for x in loan],
        "has_mortgage": [bool(x) for x in mortgage],
        "purpose": [str(x) for x in purpose],
        TARGET: [int(x) for x in default],
    }


def rows(columns: dict[str, list[Any]], features: list[str] | None = None) -> list[dict[str, Any]]:
    """Turn columns into a list of row dicts (only `features`, default all features)."""
    names = features or FEATURES
    n = len(columns[names[0]])
    return [{name: columns[name][i] for name in names} for i in range(n)]


def write_csv(columns: dict[str, list[Any]], path: str) -> None:
    """Write columns to CSV (missing values as empty fields)."""
    import csv

    names = list(columns)
    n = len(columns[names[0]])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for i in range(n):
            writer.writerow(["" if columns[c][i] is None else columns[c][i] for c in names])
