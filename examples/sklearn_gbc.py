"""End to end: a scikit-learn gradient-boosting classifier to a served model.

    python examples/sklearn_gbc.py [--out DIR] [--quick]

Trains a GradientBoostingClassifier on synthetic data (make_classification),
converts it with skl2onnx (its ONNX outputs: the predicted label and the
class probabilities as a list of {label: probability} maps), checks the
conversion against scikit-learn's predict/predict_proba, optimizes it, packages
it and serves it with fastort.Engine. Tree ensembles have no int8 form, so
there is no quantization step. Needs pip install 'fastort[sklearn]' (and fastort
installed: the examples run against the installed package). ``--quick``: a
small data set and ensemble, for CI.
"""

from __future__ import annotations

# example-requires: sklearn skl2onnx

import argparse
import os
import sys
import tempfile
import time

import numpy as np



def trained_gbc(seed: int = 0, n_estimators: int = 50, n_samples: int = 2000):
    """A fitted GradientBoostingClassifier (3 classes, 12 features) and its data split."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.model_selection import train_test_split

    X, y = make_classification(n_samples=n_samples, n_features=12, n_informative=6, n_classes=3, random_state=seed)
    X = X.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=seed)
    clf = GradientBoostingClassifier(n_estimators=n_estimators, max_depth=3, random_state=seed).fit(x_train, y_train)
    return clf, x_train, x_test, y_train, y_test


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="where to write the files (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="small data and ensemble (seconds; for CI)")
    args = parser.parse_args(argv)

    import fastort
    from fastort.prepare import prepare

    out = args.out or tempfile.mkdtemp(prefix="fastort-gbc-")
    t0 = time.perf_counter()
    clf, x_train, x_test, _, y_test = trained_gbc(n_estimators=10, n_samples=400) if args.quick else trained_gbc()
    print(f"scikit-learn accuracy: {clf.score(x_test, y_test):.1%}")

    # convert (checked against predict / predict_proba) -> optimize -> validate -> package, in one call
    result = prepare(clf, os.path.join(out, "package"), example_inputs=x_test, overwrite=True, progress=False,
                     latency_seconds=0.1 if args.quick else 0.5)
    print(result.table)

    with fastort.Engine(result.model_path, **result.engine_kwargs) as engine:
        print(engine)
        outputs = engine.run({"X": x_test[:3]})
        print("labels:       ", outputs["output_label"])
        print("probabilities:", [{k: round(v, 3) for k, v in row.items()} for row in outputs["output_probability"]])
        print("scikit-learn: ", clf.predict(x_test[:3]), np.round(clf.predict_proba(x_test[:3]), 3).tolist())
        labels = engine.run({"X": x_test})["output_label"]
    print(f"served accuracy: {np.mean(labels == y_test):.1%}; done in {time.perf_counter() - t0:.1f} s; files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
