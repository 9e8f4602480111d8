"""The ``dalib`` command end to end, on the embedded data and the committed toy configs."""

import json

import pytest
import torch

from dalib.discrepancy import DISCREPANCIES, KernelMMD
from dalib.records import current_umask
from tests.conftest import TOY, only_result, run_dalib


@DISCREPANCIES.register("test_nan_after")
class NanAfter(KernelMMD):
    """An MMD that turns NaN after ``steps`` training calls, to test the NaN stop."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps, self.calls = steps, 0

    def forward(self, f_s, f_t, **kwargs):
        self.calls += self.training
        value = super().forward(f_s, f_t, **kwargs)
        return value * torch.nan if self.calls > self.steps else value


@pytest.mark.slow
def test_dann_and_mmd_clearly_beat_source_only_on_rotated_moons(fit_toy):
    results = {m: fit_toy(m) for m in ("source_only", "mmd", "dann")}
    source_only = results["source_only"]["target_acc"]
    for method in ("mmd", "dann"):
        assert results[method]["target_acc"] >= source_only + 0.10, (method, results)
        assert results[method]["source_val_acc"] >= 0.9
    assert source_only < 0.9, "the rotated target must be a real shift for a source-only model"


@pytest.mark.slow
def test_result_record_names_the_run_and_its_numbers(fit_toy):
    record = fit_toy("dann", "--trainer.max_epochs=2", "--seed_everything=3")
    assert record["method"] == "dann"
    assert record["dataset"] == "moons"
    assert record["task"] == "moons->moons rotated 35°"
    assert record["seed"] == 3
    assert record["selected_by"] == "last"
    assert 0.0 <= record["target_acc"] <= 1.0 and 0.0 <= record["source_val_acc"] <= 1.0
    assert record["epochs"] == 2 and record["steps"] == 100
    assert record["config"]["model"]["discrepancy"]["name"] == "dann"
    assert {"torch", "pytorch-lightning", "dalib", "python"} <= set(record["versions"])
    assert record["wall_time_s"] > 0
    assert {"train/source_ce", "train/discrepancy", "train/gamma"} <= set(record["metrics"])


@pytest.mark.slow
def test_every_loss_term_and_both_accuracies_are_logged(tmp_path):
    run_dalib(
        [
            "fit",
            "-c",
            str(TOY / "dann.yaml"),
            "--trainer.max_epochs=1",
            "--model.target_loss=entropy",
        ],
        tmp_path,
    )
    (metrics_csv,) = tmp_path.rglob("metrics.csv")
    header = metrics_csv.read_text().splitlines()[0].split(",")
    for column in [
        "train/loss",
        "train/source_ce",
        "train/target_loss",
        "train/discrepancy",
        "train/gamma",
        "train/lambda_t",
        "train/source_acc",
        "val/source_acc",
        "val/target_acc",
        "lr",
    ]:
        assert column in header


@pytest.mark.slow
def test_test_subcommand_evaluates_a_checkpoint(tmp_path):
    run_dalib(["fit", "-c", str(TOY / "mmd.yaml"), "--trainer.max_epochs=2"], tmp_path / "fit")
    fit = only_result(tmp_path / "fit")
    (ckpt,) = (tmp_path / "fit").rglob("*.ckpt")
    assert fit["selected_checkpoint"] == str(ckpt)
    run_dalib(["test", "-c", str(TOY / "mmd.yaml"), f"--ckpt_path={ckpt}"], tmp_path / "test")
    assert not (tmp_path / "test").exists()  # no new run folder: the record goes beside ckpt
    record_path = ckpt.parent.parent / "test_result.json"
    assert oct(record_path.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    record = json.loads(record_path.read_text())
    assert record["metrics"]["test/target_acc"] == pytest.approx(fit["target_acc"])
    assert record["ckpt_path"] == str(ckpt)


def _fails_with_one_line(capsys, args, tmp_path) -> str:
    with pytest.raises(SystemExit) as stop:
        run_dalib(args, tmp_path)
    assert stop.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "dalib: error" in line]
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--model.gama=0.5", "unrecognized arguments: --model.gama"),
        ("--model.discrepancy=coral2", "unknown discrepancy 'coral2'"),
        ("--model.gamma=-1", "gamma must be a finite number >= 0"),
        ("--model.gamma=nan", "gamma must be a finite number >= 0"),
        ("--data.dataset=mons", "did you mean 'moons'"),
        ("--model.discrepancy={name: dann, hiden: 3}", "unknown option 'hiden'"),
        ("--model.selection=best", "unknown selection 'best'; choose one of: last, oracle, dev"),
    ],
)
def test_bad_input_stops_with_one_clear_line(capsys, tmp_path, override, message):
    line = _fails_with_one_line(capsys, ["fit", "-c", str(TOY / "dann.yaml"), override], tmp_path)
    assert message in line


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(capsys, tmp_path):
    args = [
        "fit",
        "-c",
        str(TOY / "mmd.yaml"),
        "--trainer.max_epochs=3",
        "--model.discrepancy={name: test_nan_after, steps: 60}",
    ]
    line = _fails_with_one_line(capsys, args, tmp_path)
    assert "loss became non-finite at step 60" in line
    (ckpt,) = tmp_path.rglob("*.ckpt")
    assert ckpt.name == "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == 50
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert not list(tmp_path.rglob("result.json"))


@pytest.mark.slow
def test_tensorboard_logger_is_selectable(tmp_path):
    run_dalib(
        [
            "fit",
            "-c",
            str(TOY / "source_only.yaml"),
            "--trainer.max_epochs=1",
            "--trainer.logger=pytorch_lightning.loggers.TensorBoardLogger",
        ],
        tmp_path,
    )
    assert list(tmp_path.rglob("events.out.tfevents.*"))
    assert only_result(tmp_path)["method"] == "source_only"


@pytest.mark.slow
def test_wandb_logger_runs_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_SERVICE", "")  # wandb sets it; the teardown removes it again
    run_dalib(
        [
            "fit",
            "-c",
            str(TOY / "source_only.yaml"),
            "--trainer.max_epochs=1",
            "--trainer.logger=pytorch_lightning.loggers.WandbLogger",
            "--trainer.logger.offline=true",
            "--trainer.logger.project=dalib-test",
        ],
        tmp_path,
    )
    assert list(tmp_path.rglob("offline-run-*"))
    record_path = next(tmp_path.rglob("result.json"))
    assert record_path.parent.parent.name == "dalib-test", "result.json is in the run's own folder"
