"""The ``dalib`` command: Lightning's CLI over the module and data module, plus run records.

``dalib fit -c experiments/toy/dann.yaml --model.gamma 0.5`` trains and writes ``result.json``
in the run directory; ``dalib validate`` and ``dalib test`` evaluate a checkpoint
(``--ckpt_path``); ``dalib sweep`` runs many fits and ``dalib report`` tabulates them. Bad
input stops with one line, ``dalib: error: ...``, and exit status 2.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import Callback, ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities import rank_zero_only

from dalib import report, run_history, sweep
from dalib.data import DomainDataModule
from dalib.errors import DalibError
from dalib.module import DomainAdaptationModule
from dalib.progress import ThrottledProgressBar
from dalib.results import library_versions, write_json_atomic
from dalib.resume import RandomStates
from dalib.run_identity import resume_target
from dalib.selection import SelectionTracker
from dalib.step_stats import StepStats

T = TypeVar("T")
RESULT_FILE = "result.json"
EMBEDDING_FILE = "embedding.pt"  # the last validation's features, for `dalib report --plots`
TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": {
        "class_path": "pytorch_lightning.loggers.CSVLogger",
        "init_args": {"save_dir": "runs"},
    },
    "log_every_n_steps": 50,  # Lightning's default; a logging step costs ~2 ms on a CPU
}


class DalibArgumentParser(LightningArgumentParser):
    """Reports a bad command line or config key in one line instead of the full usage text."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)
        first_line = " ".join(message.split()) or "invalid arguments"
        prog = self.prog.replace(" [options]", "")
        print(f"dalib: error: {first_line} (see `{prog} --help`)", file=sys.stderr)
        sys.exit(2)


class DalibCLI(LightningCLI):
    """Links the data's shape to the model; records each run in its run directory.

    ``fit`` writes ``result.json``; ``validate`` and ``test`` write ``validate_result.json`` and
    ``test_result.json``. Only rank 0 writes, and only after the command finished: a run that
    fails leaves earlier records and checkpoints as they were.
    """

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")
        parser.add_argument(
            "--reference",
            type=dict | None,
            default=None,
            help="the published number this config reproduces: {source: 'paper, table', "
            "target_acc: {'A->B': 91.7, ...}} (percent); `dalib report` shows it beside ours",
        )

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        """Lightning's trainer; a ``ThrottledProgressBar`` unless the config has a bar or none."""
        configured = config.get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]
        has_bar = any(isinstance(c, ProgressBar) for c in [*configured, *callbacks])
        if config.get("enable_progress_bar") is not False and not has_bar:
            callbacks = [*callbacks, ThrottledProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    def before_instantiate_classes(self) -> None:
        """``fit --ckpt_path``: continue an unfinished run of this config in its own folder
        (``dalib.run_identity``; refused before anything is written), its metrics history kept
        (``dalib.run_history``)."""
        if self.subcommand != "fit" or self.config.fit.ckpt_path is None:
            return
        init_args = getattr(self.config.fit.trainer.logger, "init_args", None)
        save_dir = getattr(init_args, "save_dir", None)
        run_root = None if save_dir is None else Path(save_dir) / str(init_args.get("name") or "")
        config = yaml.safe_load(self.parser.dump(self.config))["fit"]
        resume = resume_target(self.config.fit.ckpt_path, run_root, config)
        if resume is None:
            return  # Lightning's own handling: `last` of another logger layout, or a new run
        init_args.version = resume.run_dir.name
        self.config.fit.ckpt_path = str(resume.checkpoint)
        if rank_zero_only.rank == 0:
            run_history.set_aside(resume.run_dir, resume.global_step)
        warnings.filterwarnings("ignore", message=".*Previous log files in this directory will")

    def before_fit(self) -> None:
        self._fit_started = time.perf_counter()
        config = self.config[self.subcommand].clone().as_dict()
        for logger in self.trainer.loggers:  # the whole config, data and trainer included
            logger.log_hyperparams(config)

    def after_fit(self) -> None:
        if self.trainer.interrupted:
            return
        if self.trainer.is_global_zero:
            run_history.join(run_directory(self.trainer))
        tracker = callback_of(self.trainer, SelectionTracker)
        if self.trainer.is_global_zero and tracker.embedding:
            path = run_directory(self.trainer) / EMBEDDING_FILE
            torch.save(tracker.embedding, path)
        self.write_record(
            RESULT_FILE,
            {
                **selection_record(
                    self.trainer,
                    tracker,
                    self.model.hparams.selection,
                    self.model.hparams.selection_fallback,
                ),
                **callback_of(self.trainer, StepStats).record(self.model.device),
                "epochs": self.trainer.current_epoch,
                "steps": self.trainer.global_step,
                "wall_time_s": round(time.perf_counter() - self._fit_started, 3),
                "resumed_from": callback_of(self.trainer, RandomStates).resumed_from,
            },
        )

    def after_validate(self) -> None:
        self.write_record("validate_result.json", {"ckpt_path": self.config.validate.ckpt_path})

    def after_test(self) -> None:
        self.write_record("test_result.json", {"ckpt_path": self.config.test.ckpt_path})

    def metrics(self) -> dict[str, float]:
        """The latest logged scalar metrics."""
        return {k: float(v) for k, v in self.trainer.callback_metrics.items() if v.numel() == 1}

    def write_record(self, file_name: str, fields: dict[str, Any]) -> None:
        """Write the run record (identity, ``fields``, metrics, config, versions) atomically."""
        if not self.trainer.is_global_zero:
            return
        record = {
            "method": self.model.method,
            "dataset": self.datamodule.benchmark,
            "task": self.datamodule.task,
            "seed": self.config[self.subcommand].seed_everything,
            "reference": self.config[self.subcommand].get("reference"),
            **fields,
            "metrics": self.metrics(),
            "versions": library_versions(),
            "config": self.config[self.subcommand].clone().as_dict(),
        }
        path = run_directory(self.trainer) / file_name
        write_json_atomic(path, record)
        print(f"dalib: wrote {path}")


def callback_of(trainer, kind: type[T]) -> T:
    """The trainer's callback of type ``kind`` (the module adds one of each it needs)."""
    return next(c for c in trainer.callbacks if isinstance(c, kind))


def selection_record(
    trainer, tracker: SelectionTracker, selection: str, fallback: str | None
) -> dict[str, Any]:
    """What model selection chose: the selected model's target accuracy, and the alternatives.

    ``target_acc`` is the accuracy of the model that ``selection`` prefers (no target label is
    used unless ``selection`` is ``oracle``); ``oracle_target_acc`` the best target accuracy of
    any validation (an upper bound that uses target labels); ``last_target_acc`` the final one;
    ``selections`` what every score would have chosen. If ``selection`` could not be computed,
    ``fallback`` chooses instead and ``selection_fallback_reason`` says why; without a fallback
    the run stops with the reason.
    """
    choices = tracker.choices()
    if not choices:
        raise DalibError(
            "no validation ran, so no model was selected; keep validation enabled and end "
            "training at an epoch boundary (max_epochs, or max_steps a multiple of "
            "data.iterations_per_epoch)"
        )
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint else ""
    fallback_reason = None
    if selection not in choices:
        fallback_reason = f"{selection} could not be computed: {tracker.unavailable[selection]}"
        if fallback is None:
            raise DalibError(
                f"model selection by {fallback_reason}; or set model.selection_fallback"
            )
        selection = fallback
        latest = [c.best_model_path for c in trainer.checkpoint_callbacks if c.filename == "last"]
        best = latest[0] if latest and fallback == "last" else ""
    return {
        "selected_by": selection,
        "selection_fallback_reason": fallback_reason,
        "target_acc": choices[selection]["target_acc"],
        "selected_epoch": choices[selection]["epoch"],
        "selected_checkpoint": best or None,
        "source_val_acc": choices[selection]["source_acc"],
        "oracle_target_acc": choices["oracle"]["target_acc"],
        "last_target_acc": choices["last"]["target_acc"],
        "a_distance": tracker.a_distance,
        "selections": {
            name: {"epoch": entry["epoch"], "target_acc": entry["target_acc"]}
            for name, entry in choices.items()
        },
    }


def run_directory(trainer) -> Path:
    """The run's own folder, ``save_dir/name/version``: where Lightning puts its checkpoints.

    For CSV and TensorBoard loggers it is their ``log_dir``; for wandb it is the run's folder
    (``save_dir/project/run_id``), not the shared ``save_dir`` that ``trainer.log_dir`` gives.
    """
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / version


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``dalib`` command."""
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    arguments = sys.argv[1:] if args is None else list(args)
    try:
        if arguments[:1] == ["sweep"]:
            return sweep.main(arguments[1:])
        if arguments[:1] == ["report"]:
            return report.main(arguments[1:])
        DalibCLI(
            DomainAdaptationModule,
            DomainDataModule,
            seed_everything_default=0,
            trainer_defaults=TRAINER_DEFAULTS,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            parser_class=DalibArgumentParser,
            args=arguments,
        )
    except DalibError as error:
        print(f"dalib: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
