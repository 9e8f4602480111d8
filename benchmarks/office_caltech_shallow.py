"""Shallow baselines on Office-Caltech10 SURF, on the very features the deep configs train on.

    DALIB_DATA=../shared/data python benchmarks/office_caltech_shallow.py

1-NN and a linear SVM without adaptation, and CORAL (Sun, Feng and Saenko, AAAI 2016: source
features whitened by (C_s + I)^-1/2 and re-coloured by (C_t + I)^1/2) followed by the same SVM,
on the 12 tasks, trained on all source samples and tested on all target samples. The 1-NN row
checks dalib's data pipeline against the published 31.4 (JDA paper, Long et al., ICCV 2013);
the others put the deep results of office_caltech.md in context. Deterministic: no seeds.
Writes benchmarks/results/office_caltech_shallow.{md,json}.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import scipy.linalg
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC

from dalib.data import DATASETS

RESULTS = Path(__file__).resolve().parent / "results"
DOMAINS = "ACDW"
PUBLISHED = {
    "1-NN, no adaptation": ("31.4", "JDA paper (Long et al., ICCV 2013), Table 2"),
    "linear SVM, no adaptation": ("41.1", "Sun, Feng and Saenko, AAAI 2016, full protocol"),
    "CORAL + linear SVM": ("48.8", "Sun, Feng and Saenko, AAAI 2016, full protocol"),
}


def coral(x_s: np.ndarray, x_t: np.ndarray) -> np.ndarray:
    """Source features re-coloured with the target covariance (both regularised by I)."""
    eye = np.eye(x_s.shape[1])
    whiten = scipy.linalg.fractional_matrix_power(np.cov(x_s, rowvar=False) + eye, -0.5)
    colour = scipy.linalg.fractional_matrix_power(np.cov(x_t, rowvar=False) + eye, 0.5)
    return np.real(x_s @ whiten @ colour)


def accuracy(model, x_s, y_s, x_t, y_t) -> float:
    return 100.0 * float((model.fit(x_s, y_s).predict(x_t) == y_t).mean())


def main() -> None:
    methods = {
        "1-NN, no adaptation": lambda xs, ys, xt, yt: accuracy(
            KNeighborsClassifier(1), xs, ys, xt, yt),
        "linear SVM, no adaptation": lambda xs, ys, xt, yt: accuracy(
            SVC(kernel="linear", C=1.0), xs, ys, xt, yt),
        "CORAL + linear SVM": lambda xs, ys, xt, yt: accuracy(
            SVC(kernel="linear", C=1.0), coral(xs, xt), ys, xt, yt),
    }  # fmt: skip
    records = []
    for s, t in itertools.permutations(DOMAINS, 2):
        pair = DATASETS.build({"name": "office_caltech10", "source": s, "target": t})
        x_s, y_s = (a.numpy().astype(np.float64) for a in pair.source.tensors)
        x_t, y_t = (a.numpy().astype(np.float64) for a in pair.target_test.tensors)
        for method, run in methods.items():
            records.append({"benchmark": "office_caltech10", "task": pair.task, "method": method,
                            "target_acc": round(run(x_s, y_s, x_t, y_t), 2)})  # fmt: skip
    tasks = sorted({r["task"] for r in records})
    lines = [
        "# Office-Caltech10 SURF: shallow baselines on dalib's features",
        "",
        "Produced by `DALIB_DATA=../shared/data python benchmarks/office_caltech_shallow.py` "
        "(all source samples for training, all target samples for testing; features l1-normalised "
        "then z-scored per domain, as the release's README says; linear SVM C = 1, not tuned). "
        "No model selection: each method has no hyper-parameter chosen on the target.",
        "",
        "| method | " + " | ".join(tasks) + " | avg | published avg |",
        "|" + "---|" * (len(tasks) + 3),
    ]
    for method in methods:
        accs = [next(r["target_acc"] for r in records if r["method"] == method and r["task"] == t)
                for t in tasks]  # fmt: skip
        number, source = PUBLISHED[method]
        lines.append(f"| {method} | " + " | ".join(f"{a:.1f}" for a in accs)
                     + f" | {np.mean(accs):.1f} | {number} ({source}) |")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "office_caltech_shallow.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "office_caltech_shallow.json").write_text(json.dumps(records, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
