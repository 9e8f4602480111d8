"""ImportanceWeighting in deep training: the weights reach L_s and the discrepancy."""

import csv
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from dalib import DomainAdaptationModule, DomainDataModule
from dalib.weighting import ImportanceWeighting
from dalib.weighting.callback import effective_sample_size
from tests.conftest import TOY, only_result, quiet_fit, run_dalib

REPO_WEIGHTING = TOY.parent / "weighting"


def test_callback_weights_reach_the_loss_and_the_discrepancy(tmp_path):
    torch.manual_seed(0)
    module = DomainAdaptationModule(
        num_classes=2, input_shape=(2,), bottleneck_dim=8, discrepancy={"name": "mmd"}
    )
    data = DomainDataModule(iterations_per_epoch=2)
    quiet_fit(module, data, [ImportanceWeighting({"name": "ulsif", "alpha": 1.0})], max_epochs=1)
    w_all = module.objective.source_weights
    assert w_all is not None and len(w_all) == len(data.splits["source_train"])
    assert w_all.std() > 0.05  # rotated moons: the weights are not uniform

    source, target = next(iter(data.train_dataloader()))[0].values()
    assert len(source) == 3  # (x, y, index)
    module.eval()  # no BatchNorm batch statistics: the independent pass sees the same features
    terms = module.compute_losses({"source": source, "target": target}, progress=1.0)
    x_s, y_s, idx = source
    w = w_all[idx]
    with torch.no_grad():
        f_s, f_t = module.network.features(x_s), module.network.features(target[0])
        log_p = torch.log_softmax(module.network.head(f_s), dim=1)
    ce = -log_p[torch.arange(len(y_s)), y_s].numpy()
    expected_ce = float((w.numpy() * ce).sum() / w.numpy().sum())
    assert abs(float(terms["source_ce"].detach()) - expected_ce) < 1e-5
    assert abs(expected_ce - ce.mean()) > 1e-4  # weighting changed L_s
    with torch.no_grad():
        weighted = module.objective.discrepancy(f_s, f_t, w_s=w)
        unweighted = module.objective.discrepancy(f_s, f_t)
    assert abs(float(terms["discrepancy"].detach()) - float(weighted)) < 1e-5
    assert abs(float(weighted) - float(unweighted)) > 1e-6


def test_effective_sample_size():
    assert effective_sample_size(np.ones(10)) == 1.0
    assert abs(effective_sample_size(np.array([1.0, 0, 0, 0])) - 0.25) < 1e-12


@pytest.mark.slow
def test_importance_weighted_dann_config_runs_and_logs_weights(tmp_path):
    run_dalib(
        [
            "fit",
            "-c",
            str(REPO_WEIGHTING / "iw_dann.yaml"),
            "--trainer.max_epochs=2",
            "--data.iterations_per_epoch=5",
        ],
        tmp_path,
    )
    result = only_result(tmp_path)
    assert 0.0 <= result["target_acc"] <= 1.0
    (metrics,) = tmp_path.rglob("metrics.csv")
    header = metrics.read_text().splitlines()[0]
    assert "weights/ess" in header and "weights/max" in header


@pytest.mark.slow
def test_partial_domain_config_down_weights_outlier_source_classes(tmp_path):
    run_dalib(
        [
            "fit",
            "-c",
            str(REPO_WEIGHTING / "pada_blobs.yaml"),
            "--trainer.max_epochs=8",
            "--data.iterations_per_epoch=20",
        ],
        tmp_path,
    )
    (metrics,) = tmp_path.rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    ess = [float(r["weights/ess"]) for r in rows if r.get("weights/ess")]
    mins = [float(r["weights/min"]) for r in rows if r.get("weights/min")]
    assert len(ess) == 8
    # As the classifier learns, classes 3 and 4 (absent from the target) lose weight.
    assert min(mins) < 0.8 * mins[0] and min(ess) < ess[0]  # weights became less uniform


def test_pada_class_weights_match_an_independent_computation():
    torch.manual_seed(0)
    module = DomainAdaptationModule(num_classes=4, input_shape=(2,), bottleneck_dim=8)
    data = DomainDataModule(
        dataset={"name": "partial", "dataset": {"name": "blobs", "num_classes": 4},
                 "target_classes": [0, 1]},
        iterations_per_epoch=20,
    )  # fmt: skip
    callback = ImportanceWeighting(estimator=None, class_weights=True)
    trainer = pl.Trainer(
        max_epochs=2, callbacks=[callback], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, data)
    module.eval()
    with torch.no_grad():
        x_t = torch.stack([x for x, _ in data.splits["target_train"]])
        mean_probs = module(x_t).softmax(1).mean(0)
    y_s = torch.tensor([int(y) for _, y in data.splits["source_train"]])
    expected = (mean_probs / mean_probs.max())[y_s]
    expected = expected / expected.mean()
    got = torch.as_tensor(callback.compute_weights(trainer, module), dtype=torch.float32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
