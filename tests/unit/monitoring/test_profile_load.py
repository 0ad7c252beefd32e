"""Loading profiles: a round trip, and every way a file can be wrong names the field."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.errors import ProfileError
from app.monitoring.profile import (
    PolicyMap,
    PredictionProfile,
    Profile,
    load_profile,
    save_profile,
)
from tests.unit.monitoring.factories import as_json, boolean, categorical, numeric, profile, text


@pytest.fixture
def sample() -> Profile:
    return profile(
        [
            numeric("age", lo=18, hi=90, edges=[30.0, 50.0], ratios=[0.3, 0.4, 0.3]),
            categorical("city", {"paris": 0.7, "lyon": 0.3}, ["paris", "lyon"]),
            boolean("has_mortgage", true_ratio=0.25),
            text("comment"),
        ],
        prediction=PredictionProfile(
            output_name="proba", distribution=numeric("proba", lo=0.0, hi=1.0, edges=[0.5])
        ),
    )


def write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_round_trip(tmp_path: Path, sample: Profile) -> None:
    path = tmp_path / "p.json"
    save_profile(sample, path)
    loaded = load_profile(path)
    assert loaded == sample
    assert loaded.content_hash() == sample.content_hash()
    assert loaded.feature_names == ["age", "city", "has_mortgage", "comment"]
    assert json.loads(path.read_text())["format_version"] == 1


def test_content_hash_changes_with_content(sample: Profile) -> None:
    other = sample.model_copy(update={"n_rows": sample.n_rows + 1})
    assert other.content_hash() != sample.content_hash()
    assert len(sample.content_hash()) == 12


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ProfileError, match="file not found") as exc:
        load_profile(path)
    assert str(path) in str(exc.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read file"):
        load_profile(tmp_path)


def test_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"format_version": 1,\n  "model": }', encoding="utf-8")
    with pytest.raises(ProfileError, match=r"not valid JSON: .* line 2") as exc:
        load_profile(path)
    assert str(path) in str(exc.value)


def test_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="must be a JSON object"):
        load_profile(write(tmp_path, [1, 2, 3]))


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_wrong_format_version(tmp_path: Path, sample: Profile, version: Any) -> None:
    doc = as_json(sample)
    if version is None:
        del doc["format_version"]
    else:
        doc["format_version"] = version
    with pytest.raises(ProfileError, match="unsupported format_version") as exc:
        load_profile(write(tmp_path, doc))
    assert exc.value.field == "format_version"
    assert "format_version" in str(exc.value)


def _del(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda f: f.pop(key)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda f: f.__setitem__(key, value)


@pytest.mark.parametrize(
    ("index", "mutate", "field", "message"),
    [
        (0, _del("min"), "features[0](age).min", "Field required"),
        (0, _set("bin_ratios", [0.5, 0.5]), "features[0](age)", "bin_ratios has 2 entries"),
        (0, _set("bin_edges", [50.0, 30.0]), "features[0](age)", "strictly increasing"),
        (0, _set("bin_ratios", [0.3, 0.3, 0.3]), "features[0](age)", "sum to 1"),
        (0, _set("quantiles_1001", [1.0, 2.0]), "features[0](age)", "quantiles_1001"),
        (0, _set("std", -1.0), "features[0](age).std", "greater than or equal to 0"),
        (0, _set("min", 1000.0), "features[0](age)", "min is greater than max"),
        (0, _set("policy", "sometimes"), "features[0](age).policy", "policy must be"),
        (1, _set("policy", {"missing": "never"}), "features[1](city).policy.missing", "enforce"),
        (1, _set("policy", {"typo": "observe"}), "features[1](city).policy.typo", "Extra"),
        (1, _set("categories", {"paris": 0.5}), "features[1](city)", "sum to 1"),
        (1, _set("domain", ["paris"]), "features[1](city)", "not in domain"),
        (2, _set("true_ratio", 1.5), "features[2](has_mortgage).true_ratio", "less than"),
        (3, _del("vocabulary"), "features[3](comment).vocabulary", "Field required"),
        (3, _set("kind", "txt"), "features[3](comment)", "does not match"),
        (0, _set("surprise", 1), "features[0](age).surprise", "Extra inputs"),
        (0, _set("missing_ratio", -0.1), "features[0](age).missing_ratio", "greater than"),
    ],
)
def test_invalid_feature_names_the_field(
    tmp_path: Path,
    sample: Profile,
    index: int,
    mutate: Callable[[dict[str, Any]], None],
    field: str,
    message: str,
) -> None:
    doc = as_json(sample)
    mutate(doc["features"][index])
    path = write(tmp_path, doc)
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    assert exc.value.field == field
    text_ = str(exc.value)
    assert f"field '{field}'" in text_
    assert message in text_
    assert str(path) in text_


def test_duplicate_feature_name(tmp_path: Path, sample: Profile) -> None:
    doc = as_json(sample)
    doc["features"].append(copy.deepcopy(doc["features"][0]))
    with pytest.raises(ProfileError, match="duplicate feature name 'age'") as exc:
        load_profile(write(tmp_path, doc))
    assert exc.value.field == "features"
    assert "features[0]" in str(exc.value)
    assert "features[4]" in str(exc.value)


def test_invalid_prediction_names_the_field(tmp_path: Path, sample: Profile) -> None:
    doc = as_json(sample)
    del doc["prediction"]["distribution"]["max"]
    with pytest.raises(ProfileError) as exc:
        load_profile(write(tmp_path, doc))
    assert exc.value.field == "prediction.distribution.max"


def test_invalid_model_section(tmp_path: Path, sample: Profile) -> None:
    doc = as_json(sample)
    doc["model"]["name"] = ""
    with pytest.raises(ProfileError) as exc:
        load_profile(write(tmp_path, doc))
    assert exc.value.field == "model.name"


def test_several_problems_are_counted(tmp_path: Path, sample: Profile) -> None:
    doc = as_json(sample)
    del doc["features"][0]["min"]
    del doc["features"][0]["max"]
    with pytest.raises(ProfileError, match=r"and 1 more problems"):
        load_profile(write(tmp_path, doc))


def test_policy_string_applies_to_every_kind(tmp_path: Path, sample: Profile) -> None:
    doc = as_json(sample)
    doc["features"][0]["policy"] = "observe"
    doc["features"][1]["policy"] = "enforce"
    loaded = load_profile(write(tmp_path, doc))
    age, city = loaded.features[0], loaded.features[1]
    assert age.policy == PolicyMap.uniform("observe")
    for kind in ("missing", "wrong_type", "non_finite", "out_of_range", "unknown_category"):
        assert age.policy.of(kind) == "observe"
        assert city.policy.of(kind) == "enforce"


def test_policy_mapping_sets_single_kinds(tmp_path: Path, sample: Profile) -> None:
    doc = as_json(sample)
    doc["features"][0]["policy"] = {"missing": "observe", "out_of_range": "enforce"}
    age = load_profile(write(tmp_path, doc)).features[0]
    assert age.policy.of("missing") == "observe"
    assert age.policy.of("out_of_range") == "enforce"
    # Unnamed kinds keep their defaults.
    assert age.policy.of("wrong_type") == "enforce"
    assert age.policy.of("non_finite") == "enforce"
    assert age.policy.of("unknown_category") == "observe"


def test_policy_defaults_and_unknown_feature_kind() -> None:
    policy = PolicyMap()
    assert policy.of("missing") == "enforce"
    assert policy.of("wrong_type") == "enforce"
    assert policy.of("non_finite") == "enforce"
    assert policy.of("out_of_range") == "observe"
    assert policy.of("unknown_category") == "observe"
    # Decided by settings, not by the feature's policy.
    assert PolicyMap.uniform("enforce").of("unknown_feature") == "observe"
