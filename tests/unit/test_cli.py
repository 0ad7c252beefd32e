"""The `infersight` command as a user runs it: profile build/show/check, errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from app.cli import main
from app.demo.data import generate, write_csv
from app.errors import ConfigError
from app.monitoring.profile import load_profile
from tests.support.serve_settings import serve_settings


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.csv"
    cols = generate(1500, seed=3)
    cols["score"] = [a / 100 for a in cols["age"]]
    write_csv(cols, str(path))
    return path


def test_profile_build_from_csv_and_show(
    train_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "profile.json"
    code = main([
        "profile", "build", str(train_csv), "--target", "default", "--prediction", "score",
        "--output-name", "predict", "--model-name", "loan", "--model-version", "3",
        "--trained-at", "2026-01-02T03:04:05Z", "-o", str(out),
    ])  # fmt: skip
    assert code == 0
    shown = capsys.readouterr().out
    assert "monthly_income" in shown
    assert "categorical" in shown
    profile = load_profile(out)
    kinds = {f.name: f.kind for f in profile.features}
    assert kinds == {
        "age": "numeric", "monthly_income": "numeric", "marital_status": "categorical",
        "employment": "categorical", "loan_amount": "numeric", "has_mortgage": "boolean",
        "purpose": "text",
    }  # fmt: skip
    assert profile.feature_names == list(kinds)
    assert profile.model.version == "3"
    assert profile.model.trained_at is not None
    assert profile.model.trained_at.year == 2026
    assert profile.n_rows == 1500
    assert profile.data_hash.startswith("sha256:")
    assert profile.prediction is not None
    assert profile.prediction.output_name == "predict"
    assert profile.prediction.source == "prediction"
    income = next(f for f in profile.features if f.name == "monthly_income")
    assert 0.02 < income.missing_ratio < 0.07
    assert not income.required
    assert main(["profile", "show", str(out)]) == 0
    assert "model loan 3" in capsys.readouterr().out


def test_profile_build_from_parquet_with_overrides(
    train_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parquet = tmp_path / "train.parquet"
    pd.read_csv(train_csv).to_parquet(parquet)
    schema = tmp_path / "schema.yaml"
    schema.write_text(
        "top_k: 2\nfeatures:\n  age:\n    kind: categorical\n"
        "  loan_amount:\n    policy: {out_of_range: enforce}\n    range_tolerance: 0\n"
    )
    out = tmp_path / "p.json"
    code = main([
        "profile", "build", str(parquet), "--target", "default", "--schema", str(schema),
        "--ignore", "score,purpose", "-o", str(out),
    ])  # fmt: skip
    assert code == 0
    assert "labels are not model outputs" in capsys.readouterr().out
    profile = load_profile(out)
    by_name = {f.name: f for f in profile.features}
    assert "purpose" not in by_name
    assert "score" not in by_name
    assert by_name["age"].kind == "categorical"
    assert len(by_name["employment"].categories) == 2  # type: ignore[union-attr]
    assert by_name["loan_amount"].policy.out_of_range == "enforce"
    assert by_name["loan_amount"].range_tolerance == 0  # type: ignore[union-attr]
    assert profile.prediction is not None
    assert profile.prediction.source == "target"


def test_check_reports_violations(
    train_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.json"
    assert main(["profile", "build", str(train_csv), "--target", "default", "-o", str(out)]) == 0
    bad = tmp_path / "bad.csv"
    cols = generate(50, seed=9)
    cols["employment"] = ["gig-worker"] * 50
    cols["score"] = [0.1] * 50
    write_csv(cols, str(bad))
    capsys.readouterr()
    assert main(["check", str(bad), "--profile", str(out)]) == 0
    text = capsys.readouterr().out
    assert "unknown_category" in text
    assert "employment" in text


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        ('{"format_version": 7}', "format_version"),
        (
            '{"format_version": 1, "model": {"name": "m"}, "created_at": "2026-01-01T00:00:00Z", '
            '"data_hash": "x", "n_rows": 1, "features": [{"name": "a", "kind": "numeric"}]}',
            "features[0](a).min",
        ),
    ],
)
def test_bad_profile_fails_with_one_clear_line(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "broken.json"
    path.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "profile", "show", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_serve_with_a_bad_profile_exits_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"format_version": 1}))
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--upstream", "http://127.0.0.1:9", "--profile", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "field 'model'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_exits_1_on_drift_and_writes_json(
    train_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.json"
    assert (
        main(
            [
                "profile",
                "build",
                str(train_csv),
                "--target",
                "default",
                "--prediction",
                "score",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    same = tmp_path / "same.csv"
    shifted = tmp_path / "shifted.csv"
    cols = generate(1500, seed=4)
    cols["score"] = [a / 100 for a in cols["age"]]
    write_csv(cols, str(same))
    cols["loan_amount"] = [v * 3 for v in cols["loan_amount"]]
    write_csv(cols, str(shifted))
    capsys.readouterr()
    assert main(["check", str(same), "--profile", str(out), "--prediction", "score"]) == 0
    assert "drift: none" in capsys.readouterr().out
    report = tmp_path / "report.json"
    assert main(["check", str(shifted), "--profile", str(out), "--json", str(report)]) == 1
    assert "drift: loan_amount" in capsys.readouterr().out
    doc = json.loads(report.read_text())
    assert doc["drifted"] == ["loan_amount"]
    assert doc["rows"] == 1500
    loan = next(f for f in doc["drift"]["features"] if f["feature"] == "loan_amount")
    assert loan["drift"] is True
    assert any(t["decides"] and t["drift"] for t in loan["tests"])


def test_serve_tunes_the_gc_once_started() -> None:
    import gc

    from app.cli import GC_GEN0_THRESHOLD, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 1000  # imports and app objects left the collector's scans
        assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD
        assert gc.get_threshold()[1:] == before[1:]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_serve_flags_win_over_the_environment_field_by_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "INFERSIGHT_UPSTREAM__URL": "http://env-model:8080",
        "INFERSIGHT_UPSTREAM__TIMEOUT_SECONDS": "7",
        "INFERSIGHT_SHADOW__URL": "http://env-shadow:8080",
        "INFERSIGHT_SHADOW__GRPC_ADDRESS": "env-shadow:8081",
        "INFERSIGHT_GRPC__UPSTREAM": "env-model:8081",
    }
    settings = serve_settings(
        monkeypatch,
        ["serve", "--upstream", "http://flag-model:8080/", "--shadow-grpc", "flag-shadow:9081",
         "--grpc-port", "9091", "--upstream-grpc", "flag-model:9081"],
        env,
    )  # fmt: skip
    assert settings.upstream.url == "http://flag-model:8080"  # validated: no trailing slash
    assert settings.upstream.timeout_seconds == 7  # a field no flag names keeps the environment's
    assert settings.shadow.url == "http://env-shadow:8080"
    assert settings.shadow.grpc_address == "flag-shadow:9081"
    assert (settings.grpc.port, settings.grpc.upstream) == (9091, "flag-model:9081")


def test_a_bad_serve_flag_names_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERSIGHT_SHADOW__GRPC_ADDRESS", "env-shadow:8081")
    with pytest.raises(ConfigError, match=r"shadow\.grpc_address.*HOST:PORT"):
        serve_settings(monkeypatch, ["serve", "--shadow-grpc", "http://shadow:8081"])
