"""The ``dalib`` command: Lightning's CLI over the module and data module, plus run records.

``dalib fit -c experiments/toy/dann.yaml --model.gamma 0.5`` trains and writes ``result.json``
in the run directory; ``dalib validate`` and ``dalib test`` evaluate a checkpoint
(``--ckpt_path``). Bad input stops with one line, ``dalib: error: ...``, and exit status 2.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any

from pytorch_lightning.cli import LightningCLI

from dalib.data import DomainDataModule
from dalib.errors import DalibError
from dalib.module import DomainAdaptationModule
from dalib.results import library_versions, write_json_atomic

RESULT_FILE = "result.json"
TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": {
        "class_path": "pytorch_lightning.loggers.CSVLogger",
        "init_args": {"save_dir": "runs"},
    },
    "log_every_n_steps": 10,
}


class DalibCLI(LightningCLI):
    """Links the data's shape to the model and records every ``fit`` in ``result.json``."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")

    def before_fit(self) -> None:
        self._fit_started = time.perf_counter()

    def after_fit(self) -> None:
        if self.trainer.interrupted:
            return
        path = run_directory(self.trainer) / RESULT_FILE
        write_json_atomic(path, self.result_record(time.perf_counter() - self._fit_started))
        if self.trainer.is_global_zero:
            print(f"dalib: wrote {path}")

    def result_record(self, wall_time_s: float) -> dict[str, Any]:
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if v.numel() == 1}
        model, data = self.model, self.datamodule
        return {
            "method": model.method,
            "dataset": data.benchmark,
            "task": data.task,
            "seed": self.config[self.subcommand].seed_everything,
            "selected_by": "last",
            "target_acc": metrics.get("val/target_acc"),
            "source_val_acc": metrics.get("val/source_acc"),
            "epochs": self.trainer.current_epoch,
            "steps": self.trainer.global_step,
            "metrics": metrics,
            "wall_time_s": round(wall_time_s, 3),
            "versions": library_versions(),
            "config": self.config[self.subcommand].clone().as_dict(),
        }


def run_directory(trainer) -> Path:
    """Where the run's logs and checkpoints go: the first logger's directory."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``dalib`` command."""
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    try:
        DalibCLI(
            DomainAdaptationModule,
            DomainDataModule,
            seed_everything_default=0,
            trainer_defaults=TRAINER_DEFAULTS,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            args=args,
        )
    except DalibError as error:
        print(f"dalib: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
