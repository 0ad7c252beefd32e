"""The reference profile: what the training data looked like, as a versioned JSON document.

The schema is a contract (see DESIGN.md): dashboards, alert rules and the validator all read it.
`load_profile` turns every way a file can be wrong into one `ProfileError` naming the field.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.errors import ProfileError

FORMAT_VERSION = 1
N_QUANTILES = 1001

Kind = Literal["numeric", "categorical", "boolean", "text"]
Policy = Literal["enforce", "observe"]
ViolationKind = Literal[
    "missing", "wrong_type", "out_of_range", "unknown_category", "non_finite", "unknown_feature"
]
VIOLATION_KINDS: tuple[ViolationKind, ...] = (
    "missing",
    "wrong_type",
    "out_of_range",
    "unknown_category",
    "non_finite",
    "unknown_feature",
)

MISSING_BIN = "__missing__"
OTHER_BIN = "__other__"
UNSEEN_BIN = "__unseen__"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyMap(_Strict):
    """What happens to a row with a violation of each kind: `enforce` rejects the request (422),
    `observe` forwards it and counts the violation."""

    missing: Policy = "enforce"
    wrong_type: Policy = "enforce"
    non_finite: Policy = "enforce"
    out_of_range: Policy = "observe"
    unknown_category: Policy = "observe"

    @classmethod
    def uniform(cls, policy: Policy) -> PolicyMap:
        """The same policy for every kind."""
        return cls(
            missing=policy,
            wrong_type=policy,
            non_finite=policy,
            out_of_range=policy,
            unknown_category=policy,
        )

    def of(self, kind: ViolationKind) -> Policy:
        """The policy for one violation kind (`unknown_feature` is decided by settings)."""
        value: Policy = getattr(self, kind, "observe")
        return value


def _coerce_policy(value: Any) -> Any:
    # A bare "enforce"/"observe" applies to every kind; a mapping may name only some kinds.
    if isinstance(value, str):
        if value not in ("enforce", "observe"):
            raise ValueError("policy must be 'enforce', 'observe' or a mapping by violation kind")
        return PolicyMap.uniform(value)  # type: ignore[arg-type]
    return value


class _FeatureBase(_Strict):
    name: str = Field(min_length=1)
    dtype: str = "object"
    required: bool = False
    """True when the column was never missing in training: a missing value is then a violation."""
    missing_ratio: float = Field(ge=0.0, le=1.0, default=0.0)
    policy: PolicyMap = PolicyMap()
    drift_thresholds: dict[str, float] = Field(default_factory=dict)
    """Calibrated at build time (issue: drift); empty means the drift defaults apply."""

    _check_policy = field_validator("policy", mode="before")(_coerce_policy)


def _check_bins(edges: list[float], ratios: list[float]) -> None:
    if len(ratios) != len(edges) + 1:
        raise ValueError(
            f"bin_ratios has {len(ratios)} entries but {len(edges)} bin_edges make "
            f"{len(edges) + 1} bins"
        )
    if any(not math.isfinite(e) for e in edges):
        raise ValueError("bin_edges must be finite")
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError("bin_edges must be strictly increasing")
    if any(r < 0 or r > 1 for r in ratios):
        raise ValueError("bin_ratios must lie in [0, 1]")
    total = sum(ratios)
    if ratios and abs(total - 1.0) > 1e-6:
        raise ValueError(f"bin_ratios must sum to 1 (they sum to {total:.6f})")


class NumericFeature(_FeatureBase):
    kind: Literal["numeric"] = "numeric"
    min: float
    max: float
    mean: float
    std: float = Field(ge=0.0)
    quantiles: dict[str, float]
    """p01, p05, p25, p50, p75, p95, p99."""
    quantiles_1001: list[float]
    """Quantiles at 0, 0.001, …, 1: KS and Wasserstein to about ±0.001 without raw values."""
    bin_edges: list[float]
    """Interior edges; bin i holds edges[i-1] < x <= edges[i], the outer bins are open."""
    bin_ratios: list[float]
    """Share of the non-missing training values in each bin."""
    range_tolerance: float = Field(ge=0.0, default=0.1)
    """A value is out of range past min/max by more than this share of (max - min)."""
    sample: list[float] | None = None
    """Optional raw reservoir sample, only when asked for at build time."""

    @model_validator(mode="after")
    def _consistent(self) -> NumericFeature:
        if len(self.quantiles_1001) != N_QUANTILES:
            raise ValueError(f"quantiles_1001 must have {N_QUANTILES} values")
        if any(b < a for a, b in zip(self.quantiles_1001, self.quantiles_1001[1:], strict=False)):
            raise ValueError("quantiles_1001 must be non-decreasing")
        if self.min > self.max:
            raise ValueError("min is greater than max")
        _check_bins(self.bin_edges, self.bin_ratios)
        return self


class CategoricalFeature(_FeatureBase):
    kind: Literal["categorical"] = "categorical"
    categories: dict[str, float]
    """Top-K values and their share of the non-missing training values."""
    other_ratio: float = Field(ge=0.0, le=1.0, default=0.0)
    """Share of training values outside the top K (the `__other__` bin)."""
    domain: list[str]
    """Every value seen in training, up to the cap (a rare training value is never 'unseen')."""
    domain_complete: bool = True
    """False when training had more distinct values than the cap: unseen values are not flagged."""

    @model_validator(mode="after")
    def _consistent(self) -> CategoricalFeature:
        total = sum(self.categories.values()) + self.other_ratio
        if self.categories and abs(total - 1.0) > 1e-6:
            raise ValueError(f"categories and other_ratio must sum to 1 (they sum to {total:.6f})")
        missing = set(self.categories) - set(self.domain)
        if missing and self.domain_complete:
            raise ValueError(f"categories not in domain: {sorted(missing)[:5]}")
        return self


class BooleanFeature(_FeatureBase):
    kind: Literal["boolean"] = "boolean"
    true_ratio: float = Field(ge=0.0, le=1.0)
    """Share of True among the non-missing training values."""


class TextFeature(_FeatureBase):
    kind: Literal["text"] = "text"
    vocabulary: list[str]
    """Top-N tokens (lower-cased words) of the training text."""
    oov_rate: float = Field(ge=0.0, le=1.0)
    """Share of training tokens outside the vocabulary."""
    length_quantiles: dict[str, float]
    """Word-count (whitespace tokens) quantiles p01 … p99."""
    bin_edges: list[float]
    """Interior edges on the word count, binned like a numeric feature."""
    bin_ratios: list[float]

    @model_validator(mode="after")
    def _consistent(self) -> TextFeature:
        _check_bins(self.bin_edges, self.bin_ratios)
        return self


Feature = Annotated[
    NumericFeature | CategoricalFeature | BooleanFeature | TextFeature,
    Field(discriminator="kind"),
]


class PredictionProfile(_Strict):
    """The model's output on the reference data, described like a feature."""

    output_name: str | None = None
    """The output's name on the wire (V2 output name); None means the first output."""
    source: Literal["prediction", "target"] = "prediction"
    """`target` when built from labels instead of the model's outputs (a weaker reference)."""
    column: int | None = None
    """For 2-D outputs (e.g. class probabilities): the column to monitor; None = the last."""
    distribution: Feature
    task: Literal["classification", "regression"] | None = None
    """How ground truth is compared with this output: `classification` (class labels, or the
    probability of `positive_class` when the output is numeric) or `regression`; None: class
    labels for a categorical output, regression for a numeric one."""
    positive_class: str | None = None
    """Binary classification: the label the probability output refers to."""


class GoldenSet(_Strict):
    """Rows with the model's outputs at training time, replayed by parity probes."""

    rows: list[dict[str, Any]] = Field(min_length=1)
    """Input rows by feature name, as the model was given them."""
    predictions: list[Any] = Field(min_length=1)
    """The model's output for each row (a number or a class label)."""
    output_name: str | None = None
    """The output compared (default: the prediction section's)."""
    tolerance: float = Field(default=1e-6, ge=0.0)
    """Largest absolute difference that still matches (numbers); classes must be equal."""

    @model_validator(mode="after")
    def _consistent(self) -> GoldenSet:
        if len(self.rows) != len(self.predictions):
            raise ValueError(
                f"golden has {len(self.rows)} rows but {len(self.predictions)} predictions"
            )
        return self


class ModelInfo(_Strict):
    name: str = Field(min_length=1)
    version: str | None = None
    trained_at: datetime | None = None


class Profile(_Strict):
    """A reference profile, format version 1."""

    format_version: Literal[1] = 1
    model: ModelInfo
    created_at: datetime
    data_hash: str
    n_rows: int = Field(ge=0)
    target: str | None = None
    features: list[Feature]
    prediction: PredictionProfile | None = None
    golden: GoldenSet | None = None
    """Golden rows for parity probes (optional)."""

    @field_validator("features")
    @classmethod
    def _unique_names(cls, features: list[Feature]) -> list[Feature]:
        # A field validator (not a model validator) so the error names the field `features`.
        seen: dict[str, int] = {}
        for i, feature in enumerate(features):
            first = seen.setdefault(feature.name, i)
            if first != i:
                raise ValueError(
                    f"duplicate feature name '{feature.name}' (features[{first}] and features[{i}])"
                )
        return features

    @property
    def feature_names(self) -> list[str]:
        """Feature names in the training column order (the order of 2-D tensors)."""
        return [f.name for f in self.features]

    def content_hash(self) -> str:
        """Short, stable hash of the profile's content (the `profile_hash` label)."""
        text = self.model_dump_json()
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _format_loc(loc: tuple[int | str, ...], data: Any) -> str:
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            name = None
            if isinstance(node, list) and 0 <= item < len(node):
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    name = node["name"]
            parts.append(f"[{item}]" + (f"({name})" if name else ""))
        else:
            if isinstance(node, dict):
                node = node.get(item)
            # Discriminated-union tags ("numeric", …) add nothing for the reader.
            if item in ("numeric", "categorical", "boolean", "text"):
                continue
            parts.append(("." if parts else "") + item)
    return "".join(parts) or "<root>"


def parse_profile(data: Any, source: str | None = None) -> Profile:
    """Validate a decoded JSON document as a profile.

    Raises:
        ProfileError: naming the first invalid field.
    """
    if not isinstance(data, dict):
        raise ProfileError("a profile must be a JSON object", source=source)
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ProfileError(
            f"unsupported format_version {version!r} (this InferSight reads {FORMAT_VERSION})",
            field="format_version",
            source=source,
        )
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _format_loc(tuple(err["loc"]), data)
        msg = err["msg"].removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise ProfileError(msg + more, field=field, source=source) from None


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile file.

    Raises:
        ProfileError: the file is missing, not JSON, or invalid (the message names the field).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError("file not found", source=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"cannot read file: {exc}", source=str(p)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", source=str(p)
        ) from None
    return parse_profile(data, source=str(p))


def save_profile(profile: Profile, path: str | Path) -> None:
    """Write a profile as indented JSON."""
    Path(path).write_text(profile.model_dump_json(indent=2) + "\n", encoding="utf-8")
