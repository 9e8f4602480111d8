"""Label-free model-selection scores: values against independent computations, known answers."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.special import softmax
from scipy.stats import pearsonr

from dalib.selection.scores import (
    SCORES,
    EvalOutputs,
    domain_density_ratios,
    proxy_a_distance,
    soft_neighbourhood_density,
)
from dalib.selection.tracker import TARGET_TEST, TARGET_UNLABELLED, SelectionTracker
from tests.conftest import TOY, only_result, run_dalib


def outputs(source_logits, source_labels, source_features, target_logits, target_features):
    arrays = (source_logits, source_labels, source_features, target_logits, target_features)
    return EvalOutputs(*(torch.as_tensor(np.asarray(a)) for a in arrays))


def test_snd_equals_a_direct_computation():
    logits = np.random.default_rng(0).normal(size=(37, 5)) * 3
    p = softmax(logits, axis=1)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    entropies = []
    for i in range(len(p)):
        sim = np.delete(p @ p[i], i) / 0.05
        q = softmax(sim)
        entropies.append(-(q * np.log(q)).sum())
    got = soft_neighbourhood_density(torch.tensor(logits), chunk=8)
    assert got == pytest.approx(np.mean(entropies), abs=1e-9)


def test_entropy_and_source_accuracy_equal_direct_computations():
    rng = np.random.default_rng(1)
    s_logits, t_logits = rng.normal(size=(20, 3)), rng.normal(size=(30, 3))
    labels = rng.integers(0, 3, 20)
    out = outputs(s_logits, labels, rng.normal(size=(20, 2)), t_logits, rng.normal(size=(30, 2)))
    p = softmax(t_logits, axis=1)
    assert SCORES.build("entropy").compute(out) == pytest.approx(-(p * np.log(p)).sum(1).mean())
    assert SCORES.build("source_acc").compute(out) == pytest.approx(
        (s_logits.argmax(1) == labels).mean()
    )


def test_dev_is_iwcv_with_its_control_variate():
    rng = np.random.default_rng(2)
    s_logits, labels = rng.normal(size=(50, 3)), rng.integers(0, 3, 50)
    out = outputs(s_logits, labels, rng.normal(size=(50, 2)), s_logits, rng.normal(size=(50, 2)))
    w = rng.uniform(0.2, 3.0, 50)
    out.__dict__["density_ratios"] = w  # fix the ratios; the formulas are what is tested
    losses = -np.log(softmax(s_logits, axis=1)[np.arange(50), labels])
    weighted = w * losses
    eta = -np.cov(weighted, w)[0, 1] / np.var(w, ddof=1)
    assert SCORES.build("iwcv").compute(out) == pytest.approx(weighted.mean())
    assert SCORES.build("dev").compute(out) == pytest.approx(weighted.mean() + eta * w.mean() - eta)


def test_domain_classifier_recovers_a_known_density_ratio():
    rng = np.random.default_rng(3)
    xs, xt = rng.normal(0.0, 1.0, (2000, 1)), rng.normal(1.0, 1.0, (2000, 1))
    true_ratio = np.exp(xs[:, 0] - 0.5)  # N(1, 1) / N(0, 1)
    w = domain_density_ratios(torch.tensor(xs), torch.tensor(xt))
    assert pearsonr(np.log(w), np.log(true_ratio))[0] > 0.99
    assert np.median(np.abs(np.log(w) - np.log(true_ratio))) < 0.15


def shifted_problem():
    """Source mostly at x < 0, target at x > 0; the label is the sign of the second feature.

    Model ``good`` is right on x > 0 and wrong on the source's x < -1.5 tail; model ``source``
    is right on x < 0 and inverts the label on x > 0. Plain source accuracy prefers ``source``.
    """
    rng = np.random.default_rng(4)
    xs = np.c_[rng.normal(-1.0, 1.0, 3000), rng.normal(0, 1, 3000)]
    xt = np.c_[rng.normal(1.5, 0.5, 1000), rng.normal(0, 1, 1000)]

    def logits(x, right):
        sign = np.where(right, 1.0, -1.0) * np.sign(x[:, 1])
        return np.c_[-3 * sign, 3 * sign]

    ys = (xs[:, 1] > 0).astype(int)
    models = {
        "good": lambda x: logits(x, x[:, 0] > -1.5),
        "source": lambda x: logits(x, x[:, 0] < 0),
    }
    return {name: outputs(f(xs), ys, xs, f(xt), xt) for name, f in models.items()}, {
        name: ((f(xt).argmax(1)) == (xt[:, 1] > 0)).mean() for name, f in models.items()
    }


def test_importance_weighting_prefers_the_model_that_is_right_on_the_target():
    cases, target_acc = shifted_problem()
    assert target_acc["good"] == 1.0 and target_acc["source"] < 0.01
    acc = {name: SCORES.build("source_acc").compute(out) for name, out in cases.items()}
    assert acc["source"] > acc["good"], "source accuracy is blind to the shift"
    for score in ("iwcv", "dev"):
        risk = {name: SCORES.build(score).compute(out) for name, out in cases.items()}
        assert risk["good"] < risk["source"], (score, risk)


def test_documented_failure_entropy_and_snd_prefer_a_collapsed_model():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, 400)
    good = np.eye(4)[labels] * 6 + rng.normal(0, 0.5, (400, 4))  # confident, right, 4 clusters
    collapsed = np.tile([8.0, 0, 0, 0], (400, 1))  # one class for everything
    feats = rng.normal(size=(400, 3))
    scores = {
        name: outputs(logits[:10], labels[:10], feats, logits, feats)
        for name, logits in (("good", good), ("collapsed", collapsed))
    }
    entropy = {k: SCORES.build("entropy").compute(v) for k, v in scores.items()}
    snd = {k: SCORES.build("snd").compute(v) for k, v in scores.items()}
    assert entropy["collapsed"] < entropy["good"]  # lower entropy: preferred
    assert snd["collapsed"] > snd["good"]  # higher SND: preferred
    assert snd["collapsed"] == pytest.approx(np.log(399))


def test_proxy_a_distance_is_small_without_shift_and_large_with_it():
    rng = np.random.default_rng(6)
    a, b = torch.tensor(rng.normal(size=(500, 5))), torch.tensor(rng.normal(size=(500, 5)))
    assert proxy_a_distance(a, b) < 0.3
    assert proxy_a_distance(a, b + 4.0) > 1.9


@pytest.mark.slow
def test_run_keeps_and_records_the_selected_checkpoint(tmp_path):
    run_dalib(["fit", "-c", str(TOY / "dann.yaml"), "--trainer.max_epochs=6",
               "--model.selection=snd"], tmp_path / "fit")  # fmt: skip
    record = only_result(tmp_path / "fit")
    assert record["selected_by"] == "snd"
    assert set(record["selections"]) == {*SCORES.entries(plugins=False), "last", "oracle"}
    assert record["target_acc"] == record["selections"]["snd"]["target_acc"]
    assert record["oracle_target_acc"] == max(
        c["target_acc"] for c in record["selections"].values()
    )
    assert record["last_target_acc"] == record["selections"]["last"]["target_acc"]
    assert 0.0 <= record["a_distance"] <= 2.0
    history = record["selection_history"]  # every validation's scores, the choices among them
    assert [entry["epoch"] for entry in history] == list(range(6))
    for name, choice in record["selections"].items():
        assert choice["target_acc"] == history[choice["epoch"]]["target_acc"]
        if name in SCORES.names():
            pick = max if SCORES.build(name).higher_is_better else min
            assert history[choice["epoch"]][name] == pick(entry[name] for entry in history)
    ckpt = record["selected_checkpoint"]
    assert f"epoch={record['selected_epoch']}" in ckpt
    run_dalib(["test", "-c", str(TOY / "dann.yaml"), f"--ckpt_path={ckpt}"], tmp_path / "test")
    test_record = Path(ckpt).parent.parent / "test_result.json"  # beside the checkpoint
    tested = json.loads(test_record.read_text())["metrics"]["test/target_acc"]
    assert tested == pytest.approx(record["target_acc"], abs=1e-6)


@pytest.mark.slow
def test_two_runs_with_one_seed_give_the_same_record(tmp_path):
    records = []
    for run in ("a", "b"):
        args = ["--trainer.max_epochs=3", "--seed_everything=7", "--trainer.deterministic=true"]
        run_dalib(["fit", "-c", str(TOY / "mmd.yaml"), *args], tmp_path / run)
        records.append(only_result(tmp_path / run))
    keys = ("target_acc", "selections", "metrics", "a_distance", "oracle_target_acc")
    first, second = ({k: r[k] for k in keys} for r in records)
    assert first == second


@pytest.mark.slow
def test_a_score_that_cannot_be_computed_stops_with_why_unless_a_fallback_is_set(tmp_path, capsys):
    args = ["fit", "-c", str(TOY / "dann.yaml"), "--trainer.max_epochs=1",
            "--data.val_fraction=0.001", "--model.selection=dev"]  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        run_dalib(args, tmp_path / "strict")
    assert stop.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "dalib: error" in x]
    assert "model selection by dev could not be computed: the domain classifier" in line
    assert "set model.selection_fallback" in line

    run_dalib([*args, "--model.selection_fallback=last"], tmp_path / "fallback")
    record = only_result(tmp_path / "fallback")
    assert record["selected_by"] == "last"
    assert record["selection_fallback_reason"].startswith("dev could not be computed")
    assert record["target_acc"] == record["last_target_acc"]
    assert record["selected_checkpoint"].endswith("last.ckpt")


def test_without_record_scores_only_the_selected_score_is_computed(tmp_path):
    args = ["--trainer.max_epochs=3", "--seed_everything=7", "--trainer.deterministic=true"]
    records = {}
    for record_scores in ("true", "false"):
        save_dir = tmp_path / record_scores
        run_dalib(["fit", "-c", str(TOY / "dann.yaml"), *args, "--model.selection=entropy",
                   f"--model.record_scores={record_scores}"], save_dir)  # fmt: skip
        records[record_scores] = only_result(save_dir)
    every, selected = records["true"], records["false"]
    assert set(selected["selections"]) == {"entropy", "source_acc", "last", "oracle"}
    assert selected["a_distance"] is None and every["a_distance"] is not None
    keys = {"epoch", "step", "entropy", "source_acc", "target_acc"}
    assert set(selected["selection_history"][0]) == keys
    # the same training and the same choice: only what is recorded differs
    for key in ("target_acc", "selected_epoch", "last_target_acc", "oracle_target_acc"):
        assert selected[key] == every[key], key
    assert selected["selections"]["entropy"] == every["selections"]["entropy"]


def test_without_held_out_source_data_the_source_scores_are_unavailable_with_the_reason():
    # data.val_fraction: 0 leaves the source validation loader empty: no batch reaches the tracker
    rng = np.random.default_rng(3)
    logits, features = (
        torch.tensor(rng.normal(size=(40, 3))),
        torch.tensor(rng.normal(size=(40, 4))),
    )
    labels = torch.tensor(rng.integers(0, 3, 40))
    tracker, logged = SelectionTracker(), {}
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, global_step=10)
    module = SimpleNamespace(log_dict=logged.update)
    tracker.on_validation_epoch_start(trainer, module)
    batch = {"logits": logits, "labels": labels, "features": features}
    for loader in (TARGET_TEST, TARGET_UNLABELLED):
        tracker.on_validation_batch_end(trainer, module, batch, None, 0, loader)
    with pytest.warns(UserWarning, match="cannot be computed"):
        tracker.on_validation_epoch_end(trainer, module)
    needs_source = {"source_acc", "iwcv", "dev", "rv"}
    assert set(tracker.unavailable) == needs_source
    assert all("data.val_fraction is 0" in why for why in tracker.unavailable.values())
    (entry,) = tracker.history
    assert all(math.isnan(entry[name]) for name in needs_source)
    p = softmax(logits.numpy(), axis=1)
    assert entry["entropy"] == pytest.approx(-(p * np.log(p)).sum(1).mean(), rel=1e-6)
    assert entry["target_acc"] == pytest.approx((logits.argmax(1) == labels).double().mean())
    assert tracker.a_distance is None
    assert set(tracker.choices()) == {"entropy", "snd", "last", "oracle"}


@pytest.mark.slow
def test_a_run_without_source_hold_out_selects_by_the_fallback_and_says_why(tmp_path):
    args = ["fit", "-c", str(TOY / "source_only.yaml"), "--trainer.max_epochs=1",
            "--data.val_fraction=0", "--model.selection=source_acc",
            "--model.selection_fallback=last"]  # fmt: skip
    run_dalib(args, tmp_path)
    record = only_result(tmp_path)
    assert record["selected_by"] == "last"
    assert record["selection_fallback_reason"] == (
        "source_acc could not be computed: no held-out source data (data.val_fraction is 0): "
        "the score needs source labels"
    )
    assert set(record["selections"]) == {"entropy", "snd", "last", "oracle"}


@pytest.mark.slow
def test_selection_by_spec_keeps_a_checkpoint_whose_name_has_no_colon(tmp_path):
    run_dalib(["fit", "-c", str(TOY / "dann.yaml"), "--trainer.max_epochs=2",
               "--model.selection=dalib.selection.scores:entropy"], tmp_path)  # fmt: skip
    record = only_result(tmp_path)
    assert record["selected_by"] == "dalib.selection.scores:entropy"
    checkpoint = Path(record["selected_checkpoint"])
    assert (
        checkpoint.name
        == f"best-dalib.selection.scores_entropy-epoch={record['selected_epoch']}.ckpt"
    )
    assert checkpoint.is_file()
