"""`infersight profile build --golden-rows N`: rows kept with the model's outputs for parity."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.cli import main
from app.demo.data import DTYPES, generate, write_csv
from app.errors import ProfileError
from app.monitoring.golden import json_native, spread_indices
from app.monitoring.profile import ModelInfo, load_profile
from app.monitoring.profile_builder import BuildOptions, build_profile

N = 400


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("golden") / "train.csv"
    cols = generate(N, seed=5)
    cols["score"] = [round(a / 97, 6) for a in cols["age"]]
    cols["score"][0] = None  # no prediction for the first row: never a golden row
    write_csv(cols, str(path))
    return path


def build(train_csv: Path, out: Path, *extra: str) -> int:
    return main([
        "profile", "build", str(train_csv), "--target", "default", "--model-name", "loan",
        "-o", str(out), *extra,
    ])  # fmt: skip


def test_golden_rows_spread_over_the_data_with_predictions(
    train_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.json"
    code = build(
        train_csv, out, "--prediction", "score", "--output-name", "predict_proba",
        "--golden-rows", "12",
    )  # fmt: skip
    assert code == 0
    assert "12 golden rows" in capsys.readouterr().out
    profile = load_profile(out)
    golden = profile.golden
    assert golden is not None
    assert len(golden.rows) == len(golden.predictions) == 12
    assert golden.output_name == "predict_proba"
    assert golden.tolerance == 1e-6
    assert all(list(row) == profile.feature_names for row in golden.rows)

    df = pd.read_csv(train_csv)
    present = df.index[df["score"].notna()].tolist()
    picked = spread_indices(present, 12)
    assert picked[0] == 1
    assert picked[-1] == N - 1
    assert golden.predictions == [float(df["score"][i]) for i in picked]
    for row, i in zip(golden.rows, picked, strict=True):
        assert row["age"] == int(df["age"][i])
        assert type(row["age"]) is int
        assert type(row["has_mortgage"]) is bool
        income = df["monthly_income"][i]
        assert row["monthly_income"] == (None if math.isnan(income) else float(income))
    # Deterministic: the same data gives the same golden rows.
    again = tmp_path / "q.json"
    build(train_csv, again, "--prediction", "score", "--golden-rows", "12")
    assert load_profile(again).golden.rows == golden.rows  # type: ignore[union-attr]
    # Plain JSON: no NaN literals.
    assert "NaN" not in out.read_text()


def test_golden_rows_need_prediction(
    train_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.json"
    assert build(train_csv, out, "--golden-rows", "5") == 2
    err = capsys.readouterr().err
    assert "--golden-rows needs --prediction" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_no_golden_rows_by_default(train_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    assert build(train_csv, out, "--prediction", "score") == 0
    assert load_profile(out).golden is None
    assert "golden" in json.loads(out.read_text())  # present as null


def test_more_golden_rows_than_predictions_takes_them_all(
    train_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.json"
    assert build(train_csv, out, "--prediction", "score", "--golden-rows", "5000") == 0
    assert f"only {N - 1} rows have a prediction" in capsys.readouterr().out
    assert len(load_profile(out).golden.rows) == N - 1  # type: ignore[union-attr]


def test_negative_golden_rows_refused(train_csv: Path, tmp_path: Path) -> None:
    assert build(train_csv, tmp_path / "p.json", "--prediction", "p", "--golden-rows", "-1") == 2


def test_builder_converts_numpy_values_to_json_natives() -> None:
    cols = {
        "x": np.array([1.5, np.nan, 3.0, 4.0]),
        "k": np.array([1, 2, 3, 4], dtype=np.int64),
        "b": np.array([True, False, True, False]),
        "pred": np.array([0.1, 0.2, np.nan, 0.4]),
    }
    dtypes = {"x": "float64", "k": "int64", "b": "bool", "pred": "float64"}
    profile, _ = build_profile(
        cols, dtypes, target=None, prediction="pred", model=ModelInfo(name="m"),
        data_hash="h", options=BuildOptions(calibration_rows=0), golden_rows=3,
    )  # fmt: skip
    golden = profile.golden
    assert golden is not None
    assert golden.rows == [
        {"x": 1.5, "k": 1, "b": True},
        {"x": None, "k": 2, "b": False},
        {"x": 4.0, "k": 4, "b": False},
    ]
    assert golden.predictions == [0.1, 0.2, 0.4]
    assert [type(v) for v in golden.rows[0].values()] == [float, int, bool]


def test_builder_refuses_golden_rows_without_prediction() -> None:
    cols = generate(50, seed=1)
    with pytest.raises(ProfileError, match="golden rows need"):
        build_profile(
            cols, DTYPES, target="default", model=ModelInfo(name="m"), data_hash="h",
            options=BuildOptions(calibration_rows=0), golden_rows=3,
        )  # fmt: skip


def test_spread_and_json_native() -> None:
    assert spread_indices([0, 2, 4, 6, 8], 3) == [0, 4, 8]
    assert spread_indices([3, 4], 5) == [3, 4]
    assert spread_indices([1, 2, 3], 0) == []
    assert spread_indices([7, 8, 9], 1) == [7]
    assert json_native(np.float32(0.5)) == 0.5
    assert json_native(np.int64(3)) == 3
    assert type(json_native(np.int64(3))) is int
    assert json_native(float("inf")) is None
    assert json_native(pd.Timestamp("2026-01-01")) == "2026-01-01 00:00:00"
