"""Few target labels (10 per class on USPS): training from scratch, fine-tuning a LeNet
pretrained on MNIST, and semi-supervised DANN from the same pretrained LeNet.

Every run is a real ``dalib fit`` of a committed config; the pretraining too (source-only LeNet
on MNIST: ``experiments/digits/protocol.yaml`` with ``methods/source_only.yaml``, shortened). The
three methods see the same 100 labelled USPS training samples (``few_shot`` and
``target_labels_per_class`` with split seed 0). Model selection: the model after the last step
(``selection: last``), so no target label other than the 100 chooses anything. Writes
``benchmarks/results/finetune_digits.{md,json}``.
Needs MNIST and USPS under ``$DALIB_DATA``. Usage::

    DALIB_DATA=../shared/data python benchmarks/finetune_digits.py [--seeds 0 1 ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from dalib_runs import LENET_SETTING, REPO, fit_in_subprocess, write_results

EXPERIMENTS = REPO / "experiments"
COMMAND = "DALIB_DATA=../shared/data python benchmarks/finetune_digits.py"
PRETRAIN = ["--trainer.max_epochs=2", "--data.iterations_per_epoch=300", *LENET_SETTING]


def fit(config: Path, save_dir: Path, *overrides: str) -> dict:
    """One ``dalib fit`` run; its ``result.json`` record, with the path of its last checkpoint."""
    started = time.perf_counter()
    record, run_dir = fit_in_subprocess(config, save_dir, *overrides)
    record["checkpoint"] = str(run_dir / "checkpoints" / "last.ckpt")
    record["process_time_s"] = round(time.perf_counter() - started, 1)
    return record


def methods(checkpoint: str) -> dict[str, tuple[Path, list[str]]]:
    """Name → (config, overrides) of the compared methods."""
    init = [f"--model.init_from={checkpoint}"]
    few_shot = EXPERIMENTS / "transfer" / "digits_few_shot.yaml"
    return {
        "from scratch (100 USPS labels)": (few_shot, []),
        "fine-tune MNIST LeNet (100 USPS labels)": (few_shot, init),
        "semi-supervised DANN from MNIST LeNet (MNIST + 100 USPS labels)": (
            EXPERIMENTS / "transfer" / "digits_semisup_dann.yaml",
            init,
        ),
    }


def table(records: list[dict], seeds: list[int]) -> str:
    """Markdown: USPS test accuracy per seed and the mean per method."""
    lines = [
        "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
        "|" + "---|" * (len(seeds) + 2),
    ]
    for name in dict.fromkeys(r["name"] for r in records):
        acc = [100 * r["target_acc"] for r in records if r["name"] == name]
        cells = " | ".join(f"{a:.1f}" for a in acc)
        lines.append(f"| {name} | {cells} | {statistics.mean(acc):.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        digits = EXPERIMENTS / "digits"
        source_only = ["-c", str(digits / "methods" / "source_only.yaml"), *PRETRAIN]
        pretrained = fit(digits / "protocol.yaml", Path(tmp) / "pretrain", *source_only)
        for seed in args.seeds:
            for name, (config, overrides) in methods(pretrained["checkpoint"]).items():
                run_dir = Path(tmp) / f"run{len(records)}"
                record = fit(config, run_dir, f"--seed_everything={seed}", *overrides)
                records.append({**record, "name": name})
                print(f"seed {seed}: {name}: {100 * record['target_acc']:.1f}", flush=True)
    for r in [pretrained, *records]:
        r.pop("config")
        r.pop("checkpoint")
    md = (
        "# Few target labels: fine-tuning vs from scratch vs semi-supervised DA (MNIST→USPS)\n\n"
        f"Produced by `{COMMAND}` (configs: `experiments/transfer/digits_few_shot.yaml`,\n"
        "`experiments/transfer/digits_semisup_dann.yaml`; pretraining:\n"
        "`experiments/digits/protocol.yaml -c experiments/digits/methods/source_only.yaml\n"
        f"{' '.join(PRETRAIN)}`, run once, seed 0).\n\n"
        "USPS test accuracy (%, 2,007 images). All three methods use the same 100 labelled USPS\n"
        "training images (10 per class, split seed 0); from scratch and fine-tuning train on\n"
        "them alone (90 train, 10 held out), 3 epochs of 100 steps of 32; semi-supervised DANN\n"
        "trains on all of MNIST, the unlabelled USPS training set and the 100 labels\n"
        "(`L_t`: cross-entropy; a quarter of each target batch is labelled,\n"
        "`labelled_target_fraction: 0.25`), 2 epochs of 200 steps. Fine-tuning and DANN start\n"
        "from the whole pretrained LeNet (`init_from`; backbone, bottleneck and head: the same\n"
        "10 classes). Model selection: the model after the last step (no target label besides\n"
        "the 100 chooses anything); the json has each run's oracle accuracy too.\n\n"
        f"{table(records, args.seeds)}\n\n"
        "The pretrained LeNet itself (MNIST only, no USPS label): "
        f"{100 * pretrained['target_acc']:.1f}% on USPS test.\n\n"
        "Wall time per run (s, on a shared 2-core CPU machine): pretraining "
        f"{pretrained['process_time_s']}; "
        + ", ".join(f"{r['name']} seed {r['seed']} {r['process_time_s']}" for r in records)
        + "\n\n"
        f"Versions: {json.dumps(pretrained['versions'])}\n"
    )
    result = {"command": COMMAND, "pretrained": pretrained, "runs": records}
    write_results(args.out, "finetune_digits", md, result)


if __name__ == "__main__":
    main()
