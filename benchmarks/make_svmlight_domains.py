"""Two small review-like domains in svmlight form, each a train and a test file, labels −1/+1.

    python benchmarks/make_svmlight_domains.py            # into $DALIB_DATA/svmlight_reviews
    python benchmarks/make_svmlight_domains.py --out DIR

The data of ``experiments/features/train_test_svmlight.yaml``: the protocol of the Amazon-reviews
benchmarks (sparse word counts, a train and a separate test file per domain, adapt on the target
train file without its labels, report accuracy on the target test file) at a size that trains in
seconds. Documents are bags of words: sentiment words both domains use, sentiment words of their
own domain only, and neutral words of their own domain; so a source-trained classifier transfers
only through the shared words. Seeded: the same files on every run (about 1 MB in all).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.datasets import dump_svmlight_file

from dalib.data.roots import data_root

WIDTH = 2000  # vocabulary size: the features
SHARED = {1: range(0, 50), -1: range(50, 100)}  # sentiment words of both domains, by label
OWN = {  # each domain's sentiment words by label, and its neutral words
    "books": ({1: range(100, 150), -1: range(150, 200)}, range(300, 1150)),
    "kitchen": ({1: range(200, 250), -1: range(250, 300)}, range(1150, 2000)),
}
SIZES = {"train": 400, "test": 800}
MIX = (0.08, 0.16, 0.04)  # word probabilities: shared, own sentiment, opposite sentiment


def documents(domain: str, n: int, rng: np.random.Generator) -> tuple[csr_matrix, np.ndarray]:
    """``n`` word-count rows of ``domain`` and their labels, half −1 and half +1."""
    sentiment, neutral = OWN[domain]
    labels = rng.permutation(np.repeat([-1, 1], [n // 2, n - n // 2]))
    lengths = rng.poisson(40, size=n) + 5
    rows = np.repeat(np.arange(n), lengths)
    kinds = rng.choice(4, size=len(rows), p=[*MIX, 1 - sum(MIX)])
    words = np.empty(len(rows), dtype=np.int64)
    for kind in range(4):
        for label in (-1, 1):
            pools = [SHARED[label], sentiment[label], SHARED[-label], neutral]
            chosen = (kinds == kind) & (labels[rows] == label)
            pool = pools[kind]
            words[chosen] = rng.integers(pool.start, pool.stop, size=chosen.sum())
    counts = csr_matrix((np.ones(len(rows)), (rows, words)), shape=(n, WIDTH))
    counts.sum_duplicates()
    return counts, labels


def write_domains(folder: Path, seed: int = 0) -> list[Path]:
    """``<domain>_{train,test}.svm`` for both domains under ``folder``; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for domain in OWN:
        for split, n in SIZES.items():
            x, y = documents(domain, n, rng)
            path = folder / f"{domain}_{split}.svm"
            dump_svmlight_file(x, y, str(path), zero_based=False)
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=data_root() / "svmlight_reviews")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in write_domains(args.out, args.seed):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
