"""Train the loan-default model and save it in the layout a model server expects.

Standalone script: run it with the Python of a *server* virtualenv (``.venvs/<name>``), not
with the project's own venv, so that the pickled pipeline is loaded by the very same
scikit-learn that wrote it.  It needs numpy, pandas, scikit-learn and joblib, plus mlflow for
``--format mlflow``.  From the project it only imports ``app.demo.data`` (numpy only).

    python tests/integration/servers/train.py --format mlserver --out DIR --name loan --version v1
    python tests/integration/servers/train.py --format kserve --out DIR
    python tests/integration/servers/train.py --format mlflow --out DIR
    python tests/integration/servers/train.py --format mlserver --out DIR --variant swapped

``--variant swapped`` fits a different model (another training sample, stronger regularisation):
the same features and classes, different probabilities, as when the wrong model is deployed.

Besides the model it writes ``DIR/reference.json``: a few held-out rows with the model's own
predictions and probabilities, so that tests can check the served answers exactly.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]

NUMERIC = ["age", "monthly_income", "loan_amount"]
CATEGORICAL = ["marital_status", "employment"]
BOOLEAN = ["has_mortgage"]
TEXT = ["purpose"]
FEATURES = [
    "age",
    "monthly_income",
    "marital_status",
    "employment",
    "loan_amount",
    "has_mortgage",
    "purpose",
]
TARGET = "default"
REFERENCE_FILE = "reference.json"


def load_data_module() -> ModuleType:
    """Import ``app.demo.data`` from the repo (it needs numpy only).

    Falls back to loading the file by path, so that the server venvs keep working even if
    ``app/__init__.py`` one day imports something they do not have.
    """
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        from app.demo import data

        return data
    except ImportError:
        path = REPO_ROOT / "app" / "demo" / "data.py"
        spec = importlib.util.spec_from_file_location("_infersight_demo_data", path)
        if spec is None or spec.loader is None:
            raise
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


def frame(columns: dict[str, list[Any]]) -> Any:
    """Feature columns as a DataFrame with explicit dtypes (None -> NaN for income)."""
    import numpy as np
    import pandas as pd

    return pd.DataFrame(
        {
            "age": np.asarray(columns["age"], dtype="int64"),
            "monthly_income": np.asarray(
                [np.nan if v is None else v for v in columns["monthly_income"]], dtype="float64"
            ),
            "marital_status": pd.Series(columns["marital_status"], dtype=object),
            "employment": pd.Series(columns["employment"], dtype=object),
            "loan_amount": np.asarray(columns["loan_amount"], dtype="float64"),
            "has_mortgage": np.asarray(columns["has_mortgage"], dtype=bool),
            "purpose": pd.Series(columns["purpose"], dtype=object),
        }
    )


VARIANTS = {
    # name: (training-sample seed offset, LogisticRegression C)
    "default": (0, 1.0),
    "swapped": (1, 0.05),
}


def build_pipeline(c: float = 1.0) -> Any:
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    # np.asarray(..., dtype=float64) turns True/False (bool, object or 0/1 ints) into 1.0/0.0;
    # a numpy function (not a lambda) so the pickle loads in any process.
    as_float = FunctionTransformer(
        np.asarray, kw_args={"dtype": "float64"}, feature_names_out="one-to-one"
    )
    pre = ColumnTransformer(
        [
            ("num", numeric, NUMERIC),
            ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ("bool", as_float, BOOLEAN),
        ],
        remainder="drop",  # the free-text `purpose` column is not used
    )
    return Pipeline([("pre", pre), ("clf", LogisticRegression(C=c, max_iter=1000))])


def train(n: int, seed: int, variant: str = "default") -> tuple[Any, Any]:
    data = load_data_module()
    offset, c = VARIANTS[variant]
    columns = data.generate(n, seed + offset)
    x = frame(columns)
    y = columns[TARGET]
    model = build_pipeline(c)
    model.fit(x, y)
    return model, x


def reference(model: Any, n: int = 20, seed: int = 12345) -> dict[str, Any]:
    """Held-out rows (JSON-able, None for missing income) and the model's answers."""
    data = load_data_module()
    columns = data.generate(n, seed)
    x = frame(columns)
    rows = [{name: columns[name][i] for name in FEATURES} for i in range(n)]
    predictions = [int(v) for v in model.predict(x)]
    probabilities = [[float(p) for p in row] for row in model.predict_proba(x)]
    return {
        "features": FEATURES,
        "rows": rows,
        "predictions": predictions,
        "probabilities": probabilities,
        "classes": [int(c) for c in model.classes_],
    }


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _atomic_dump_joblib(model: Any, path: Path) -> None:
    import joblib

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    joblib.dump(model, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def save_mlserver(model: Any, out: Path, name: str, version: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": version},
    }
    _atomic_dump_joblib(model, out / "model.joblib")
    _atomic_write_text(out / "model-settings.json", json.dumps(settings, indent=2) + "\n")


def save_kserve(model: Any, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _atomic_dump_joblib(model, out / "model.joblib")


def save_mlflow(model: Any, x: Any, out: Path) -> None:
    import shutil

    import mlflow.sklearn
    from mlflow.models import infer_signature
    from mlflow.types.schema import ColSpec, Schema

    # age as double: integers cannot carry missing values, and MLflow upcasts long -> double.
    example = x.head(5).astype({"age": "float64"})
    signature = infer_signature(example, model.predict(example))
    # `purpose` (dropped by the pipeline) is optional in requests.
    inputs = [
        ColSpec(spec.type, spec.name, required=False) if spec.name == "purpose" else spec
        for spec in signature.inputs.inputs
    ]
    signature.inputs = Schema(inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(out)
    # save_model refuses an existing directory: write next to it, then rename.
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    staging = tmp / "model"
    mlflow.sklearn.save_model(
        model,
        str(staging),
        signature=signature,
        input_example=example,
        # MLflow 3.x defaults to skops outside Databricks, which needs the skops package and
        # an explicit trust list for numpy.asarray; cloudpickle works with mlflow-skinny too.
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
    )
    os.replace(staging, out)
    shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", required=True, choices=["mlserver", "kserve", "mlflow"])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--name", default="loan", help="model name (mlserver)")
    parser.add_argument("--version", default="v1", help="model version (mlserver)")
    parser.add_argument("--n", type=int, default=5000, help="training rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variant", choices=sorted(VARIANTS), default="default", help="which model to fit"
    )
    args = parser.parse_args(argv)

    model, x = train(args.n, args.seed, args.variant)
    out: Path = args.out.resolve()
    if args.format == "mlserver":
        save_mlserver(model, out, args.name, args.version)
    elif args.format == "kserve":
        save_kserve(model, out)
    else:
        save_mlflow(model, x, out)
    # Written last: its presence marks a complete artefact.
    ref = {**reference(model), "variant": args.variant}
    _atomic_write_text(out / REFERENCE_FILE, json.dumps(ref, indent=1) + "\n")
    print(f"trained on {args.n} rows, saved {args.format} model to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
