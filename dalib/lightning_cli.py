"""``dalib fit``, ``validate`` and ``test``: Lightning's CLI over the module and the data module,
with run records, resume checks and one-line errors.

``fit`` writes ``result.json`` in the run directory; ``validate`` and ``test`` evaluate a
checkpoint (``--ckpt_path``) and write their record beside it. The model and the datasets load
only when a command runs (the first lines of ``run_lightning``).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import yaml
from jsonargparse.typing import Path_fr
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities import rank_zero_only

from dalib import run_history
from dalib.calibration import gamma_record
from dalib.catalogue import names_help
from dalib.collapse import CollapseGuard
from dalib.commands import COMMANDS, LIGHTNING_COMMANDS, command_parser
from dalib.console import fail, quiet_lightning
from dalib.errors import DalibError
from dalib.progress import ThrottledProgressBar
from dalib.records import (
    EMBEDDING_FILE,
    RESULT_FILE,
    check_writable,
    checkpoint_run_directory,
    library_versions,
    run_directory,
    write_json_atomic,
)
from dalib.resume import RandomStates
from dalib.run_identity import resume_target
from dalib.step_stats import StepStats

if TYPE_CHECKING:
    from jsonargparse import Namespace
    from pytorch_lightning import Trainer

    from dalib.selection import SelectionTracker

T = TypeVar("T")
CHECKPOINT_NAMES = ("best", "last", "hpc")  # --ckpt_path values Lightning resolves itself
TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": {
        "class_path": "pytorch_lightning.loggers.CSVLogger",
        "init_args": {"save_dir": "runs"},
    },
    "log_every_n_steps": 50,  # Lightning's default; a logging step costs ~2 ms on a CPU
    "enable_model_summary": False,  # `--trainer.enable_model_summary true` prints it
}


class DalibArgumentParser(LightningArgumentParser):
    """Reports a bad command line or config key in one line instead of the full usage text."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        fail(f"{message or 'invalid arguments'} (see `{prog} --help`)")


class DalibCLI(LightningCLI):
    """Links the data's shape to the model; records each run in its run directory.

    ``fit`` writes ``result.json``; ``validate`` and ``test`` write ``validate_result.json`` and
    ``test_result.json`` beside the checkpoint they evaluated. Only rank 0 writes, and only
    after the command finished: a run that fails leaves earlier records and checkpoints as
    they were.
    """

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")
        parser.add_argument(
            "--reference",
            type=dict | Path_fr | None,
            default=None,
            help="the published number this config reproduces: {source: 'paper, table', "
            "target_acc: {'A->B': 91.7, ...}} (percent), or a reference table, a YAML file "
            "{method: {source: ..., target_acc: ...}} (relative to the config file naming it) "
            "whose entry for model.method the run records; `dalib report` shows it beside ours",
        )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Lightning's trainer; a ``ThrottledProgressBar`` unless the config has a bar or none."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer = config.get("trainer") or {}
        configured = trainer.get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]
        has_bar = any(isinstance(c, ProgressBar) for c in configured)
        if trainer.get("enable_progress_bar") is not False and not has_bar:
            kwargs.setdefault("callbacks", [*configured, ThrottledProgressBar()])
        return super().instantiate_trainer(**kwargs)

    def before_instantiate_classes(self) -> None:
        """Check the files the command reads and writes before anything runs. Then ``fit
        --ckpt_path``: continue an unfinished run of this config in its own folder
        (``dalib.run_identity``; refused before anything is written), its metrics history kept
        (``dalib.run_history``)."""
        check_paths(
            self.subcommand, self.config[self.subcommand] if self.subcommand else self.config
        )
        if self.subcommand != "fit" or self.config.fit.ckpt_path is None:
            return
        init_args = getattr(self.config.fit.trainer.logger, "init_args", None)
        save_dir = getattr(init_args, "save_dir", None)
        run_root = None if save_dir is None else Path(save_dir) / str(init_args.get("name") or "")
        config = yaml.safe_load(self.parser.dump(self.config))["fit"]
        resume = resume_target(self.config.fit.ckpt_path, run_root, config)
        if resume is None:
            return  # Lightning's own handling: `last` of another logger layout, or a new run
        if resume.run_dir.resolve() != run_root.resolve():  # else: save_dir/name is the run
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
        from dalib.selection import SelectionTracker  # scikit-learn loads only for a command

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
                "collapse": callback_of(self.trainer, CollapseGuard).record(),
                "gamma_calibration": gamma_record(self.model.objective),
            },
        )

    def after_validate(self) -> None:
        ckpt_path = self.config.validate.ckpt_path
        self.write_record(
            "validate_result.json", {"ckpt_path": ckpt_path}, evaluated_run_folder(ckpt_path)
        )

    def after_test(self) -> None:
        ckpt_path = self.config.test.ckpt_path
        self.write_record(
            "test_result.json", {"ckpt_path": ckpt_path}, evaluated_run_folder(ckpt_path)
        )

    def metrics(self) -> dict[str, float]:
        """The latest logged scalar metrics."""
        return {k: float(v) for k, v in self.trainer.callback_metrics.items() if v.numel() == 1}

    def write_record(
        self, file_name: str, fields: dict[str, Any], folder: Path | None = None
    ) -> None:
        """Write the run record (identity, ``fields``, metrics, config, versions, the GPUs it was
        given) atomically into ``folder`` (the run folder of this command's trainer unless
        given)."""
        if not self.trainer.is_global_zero:
            return
        record = {
            "method": self.model.method,
            "dataset": self.datamodule.benchmark,
            "task": self.datamodule.task,
            **self.datamodule.record(),  # where source_val_acc and target_acc come from
            "seed": self.config[self.subcommand].seed_everything,
            "reference": reference_entry(
                self.config[self.subcommand].get("reference"), self.model.method
            ),
            **fields,
            "metrics": self.metrics(),
            "versions": library_versions(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),  # a sweep's slice
            "config": self.config[self.subcommand].clone().as_dict(),
        }
        path = (folder or run_directory(self.trainer)) / file_name
        write_json_atomic(path, record)
        print(f"dalib: wrote {path}")


def reference_entry(reference: dict | Path_fr | None, method: str | None) -> dict | None:
    """The published number a run records: ``--reference`` itself, or, where it names a
    reference table, that table's entry for ``method`` (None where the table has none)."""
    if reference is None or isinstance(reference, dict):
        return reference
    table = yaml.safe_load(Path(reference.absolute).read_text())
    if not isinstance(table, dict):
        raise DalibError(f"reference table {reference.absolute}: not a mapping of methods")
    return table.get(method)


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
    ``selections`` what every score would have chosen, ``selection_history`` every validation's
    scores and target accuracy. If ``selection`` could not be computed,
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
        "selection_history": tracker.history_record(),
    }


def evaluated_run_folder(ckpt_path: str | None) -> Path | None:
    """The run folder of the checkpoint ``validate``/``test`` evaluated, if given as a file."""
    return (
        checkpoint_run_directory(Path(ckpt_path))
        if ckpt_path and Path(ckpt_path).is_file()
        else None
    )


def check_paths(command: str | None, config: Namespace) -> None:
    """One line before anything runs if the checkpoint to read is missing or the run folder
    cannot be written. ``validate``/``test`` of a checkpoint file log no new run folder:
    their record goes beside the checkpoint."""
    ckpt_path = config.get("ckpt_path")
    if ckpt_path and ckpt_path not in CHECKPOINT_NAMES and not Path(ckpt_path).is_file():
        raise DalibError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
    if command in ("validate", "test") and ckpt_path and Path(ckpt_path).is_file():
        config.trainer.logger = False
        return
    if command == "fit":
        for folder in output_folders(config.trainer):
            check_writable(
                folder,
                "cannot write runs into",
                "choose another --trainer.logger.init_args.save_dir",
            )


def output_folders(trainer: Namespace) -> list[Path]:
    """The folders the configured loggers write run folders into (else the trainer's root)."""
    loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
    folders = [
        Path(logger.init_args.save_dir)
        for logger in loggers
        if getattr(getattr(logger, "init_args", None), "save_dir", None)
    ]
    return folders or [Path(trainer.default_root_dir or ".")]


def run_lightning(arguments: list[str]) -> None:
    """``dalib fit|validate|test ...``: Lightning's CLI over the module and the data module."""
    from dalib.data import DomainDataModule
    from dalib.module import DomainAdaptationModule

    quiet_lightning()
    # validate/test keep their config in their record; Lightning's SaveConfigCallback would
    # write config.yaml into the logger's folder, the working directory when there is no logger.
    evaluating = arguments[:1] in (["validate"], ["test"])
    # LightningCLI reads the command line from sys.argv; given `args` as well, it warns. The
    # `dalib` script's own path stays first: Lightning's DDP relaunches `python <argv[0]> ...`.
    script = sys.argv[0] if sys.argv and Path(sys.argv[0]).name == "dalib" else "dalib"
    saved, sys.argv = sys.argv, [script, *arguments]
    try:
        DalibCLI(
            DomainAdaptationModule,
            DomainDataModule,
            seed_everything_default=0,
            trainer_defaults=TRAINER_DEFAULTS,
            auto_configure_optimizers=False,
            save_config_callback=None if evaluating else SaveConfigCallback,
            save_config_kwargs={"overwrite": True},
            parser_class=DalibArgumentParser,
            parser_kwargs={
                "description": command_parser().description,
                **{name: {"description": COMMANDS[name]} for name in LIGHTNING_COMMANDS},
                "fit": {"description": f"{COMMANDS['fit']}. {names_help()}"},
            },
        )
    finally:
        sys.argv = saved
