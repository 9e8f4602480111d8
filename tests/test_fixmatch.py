"""FixMatch: its loss against a loop, the constant pseudo-label, the weak and strong target views
(one image, two independent augmentations, labels hidden), the objective's single forward pass
with D on the weak view, the one-line refusals, training, data-parallel training and resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from dalib.data.datamodule import DomainDataModule
from dalib.data.views import TwoViews, ViewOptions, image_views
from dalib.discrepancy import DISCREPANCIES
from dalib.distributed import ShardedRandomSampler
from dalib.errors import DalibError, DalibWarning
from dalib.module import DomainAdaptationModule
from dalib.network import Network
from dalib.objective import Objective
from dalib.target_losses import TARGET_LOSSES, UNLABELLED, FixMatch
from tests.conftest import REPO, TOY, quiet_fit
from tests.test_resume import fit, kill_when, record
from tests.tiny_images import tiny_digits

TINY = {"name": "tests.tiny_images:tiny_digits"}
# Rows 0 and 3 are confident at tau = 0.9 (classes 0 and 1); rows 1 and 2 are not.
WEAK = torch.tensor(
    [[5.0, 0.0, 0.0], [0.3, 0.1, 0.0], [1.0, 1.2, 0.0], [0.0, 6.0, 0.0]], dtype=torch.float64
)
STRONG = torch.tensor(
    [[0.5, 1.0, 0.0], [2.0, 0.0, 1.0], [0.0, 0.0, 3.0], [0.2, 0.3, 0.1]], dtype=torch.float64
)


def fixmatch_by_loop(weak: list[list[float]], strong: list[list[float]], tau: float) -> float:
    """``(1/B)·Σ_i 1[max q_i ≥ τ]·(−log softmax(strong_i)[argmax q_i])``, sample by sample."""
    total = 0.0
    for w, s in zip(weak, strong, strict=True):
        q = [math.exp(v) / sum(math.exp(u) for u in w) for v in w]
        if max(q) >= tau:
            label = q.index(max(q))
            total += -(s[label] - math.log(sum(math.exp(u) for u in s)))
    return total / len(weak)


def test_the_loss_is_the_masked_cross_entropy_of_the_strong_view_over_the_whole_batch():
    loss = TARGET_LOSSES.build({"name": "fixmatch", "threshold": 0.9})
    value = loss(WEAK, STRONG).item()
    expected = fixmatch_by_loop(WEAK.tolist(), STRONG.tolist(), 0.9)
    assert value == pytest.approx(expected, rel=1e-12)
    # two confident rows of four: the mean is over all four, not over the two
    two = fixmatch_by_loop(WEAK[[0, 3]].tolist(), STRONG[[0, 3]].tolist(), 0.9)
    assert value == pytest.approx(two / 2, rel=1e-12)
    assert FixMatch(0.0)(WEAK, STRONG).item() == pytest.approx(
        fixmatch_by_loop(WEAK.tolist(), STRONG.tolist(), 0.0), rel=1e-12
    )
    assert FixMatch(0.999)(WEAK, STRONG).item() == 0.0  # none confident: zero
    assert FixMatch().threshold == 0.95  # the paper's tau


def test_the_pseudo_label_is_a_constant_the_gradient_flows_through_the_strong_view():
    weak, strong = WEAK.clone().requires_grad_(), STRONG.clone().requires_grad_()
    FixMatch(0.9)(weak, strong).backward()
    assert weak.grad is None  # no gradient through the pseudo-label or the mask
    assert strong.grad[[1, 2]].abs().sum() == 0  # unconfident rows are masked out
    # confident rows: d/ds of CE(s, label)/B = (softmax(s) - onehot(label)) / B
    expected = (F.softmax(STRONG[[0, 3]], 1) - F.one_hot(torch.tensor([0, 1]), 3)) / 4
    torch.testing.assert_close(strong.grad[[0, 3]], expected)


def test_bad_thresholds_are_refused():
    for threshold in (-0.1, 1.5):
        with pytest.raises(DalibError, match="threshold must be in"):
            FixMatch(threshold)


def network(bottleneck_dim: int | None = 6) -> Network:
    torch.manual_seed(0)
    return Network(3, (4,), {"name": "mlp", "hidden_dims": [8]}, bottleneck_dim=bottleneck_dim)


def batch(labels: torch.Tensor | None = None) -> dict:
    torch.manual_seed(1)
    x_weak, x_strong = torch.randn(7, 4), torch.randn(7, 4)
    y_t = torch.full((7,), UNLABELLED) if labels is None else labels
    return {"source": (torch.randn(5, 4), torch.randint(0, 3, (5,))),
            "target": (x_weak, y_t, x_strong)}  # fmt: skip


def test_one_forward_pass_of_source_weak_and_strong_with_d_on_the_weak_view():
    net = network()  # a BatchNorm bottleneck: the three batches share its statistics
    spec = {"name": "fixmatch", "threshold": 0.0}
    obj = Objective(net, discrepancy="coral", target_loss=spec, gamma=1.0)
    terms = obj(net, batch(), 0.5)
    (x_s, _), (x_weak, _, x_strong) = batch()["source"], batch()["target"]
    f = net.paired_features(x_s, torch.cat([x_weak, x_strong]))
    f_s, f_weak, f_strong = f.split([5, 7, 7])
    logits = net.head(f)
    expected = fixmatch_by_loop(logits[5:12].tolist(), logits[12:].tolist(), 0.0)
    assert terms["target_loss"].item() == pytest.approx(expected, rel=1e-5)
    coral = DISCREPANCIES.build("coral")
    assert terms["discrepancy"].item() == pytest.approx(coral(f_s, f_weak).item(), rel=1e-5)
    assert terms["discrepancy"].item() != pytest.approx(coral(f_s, f_strong).item(), rel=1e-3)
    # target labels are never read: the true ones give the same terms
    with_labels = obj(net, batch(torch.tensor([0, 1, 2, 0, 1, 2, 0])), 0.5)
    for name in ("target_loss", "discrepancy", "loss"):
        assert with_labels[name].item() == terms[name].item(), name


def test_the_gradient_reaches_the_network_through_the_strong_view_only():
    net = network(bottleneck_dim=None)  # no BatchNorm: each sample's output is its own
    obj = Objective(net, target_loss={"name": "fixmatch", "threshold": 0.0})
    x_s, y_s = batch()["source"]
    x_weak, y_t, x_strong = (t.clone() for t in batch()["target"])
    x_weak.requires_grad_(), x_strong.requires_grad_()
    terms = obj(net, {"source": (x_s, y_s), "target": (x_weak, y_t, x_strong)}, 0.5)
    terms["target_loss"].backward()
    assert x_weak.grad is None or x_weak.grad.abs().sum() == 0
    assert (x_strong.grad.abs().sum(dim=1) > 0).all()
    assert net.backbone[1].weight.grad.abs().sum() > 0


def test_a_target_batch_without_the_strong_view_is_a_one_line_error():
    net = network()
    obj = Objective(net, target_loss="fixmatch")
    one_view = {**batch(), "target": batch()["target"][:2]}
    with pytest.raises(DalibError, match=r"set data\.target_views"):
        obj(net, one_view, 0.5)


def test_with_identity_augmentation_both_views_are_the_image():
    images = tiny_digits().target_train
    views = image_views(images, ViewOptions(shift=0.0, ops=0, cutout=0.0))
    dataset = TwoViews(views.images, views.weak, views.strong)
    for index in (0, 7, 33):
        weak, label, strong = dataset[(index, 12345 + index)]
        assert torch.equal(weak, images[index][0]) and torch.equal(strong, images[index][0])
        assert int(label) == images[index][1]


def shift_of(view: torch.Tensor, image: torch.Tensor, pad: int) -> tuple[int, int] | None:
    """The offset of ``view`` in the reflect-padded ``image``, if it is a crop of it."""
    padded = TF.pad(image, [pad] * 4, padding_mode="reflect")
    size = image.shape[-1]
    for i in range(2 * pad + 1):
        for j in range(2 * pad + 1):
            if torch.equal(padded[..., i : i + size, j : j + size], view):
                return i, j
    return None


def test_the_two_views_are_independent_augmentations_of_the_same_image():
    images = tiny_digits().target_train
    raw, unit = images.images, images[0][0]
    assert torch.equal(unit, raw[0].float() / 127.5 - 1)
    views = image_views(images, ViewOptions())
    dataset = TwoViews(views.images, views.weak, views.strong)
    state = torch.get_rng_state()
    draws = [(index, seed) for index in (3, 4) for seed in (1, 2, 3)]
    samples = dataset.__getitems__(draws)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was
    offsets = []
    for (index, _), (weak, _, strong) in zip(draws, samples, strict=True):
        assert not torch.equal(weak, strong)
        offset = shift_of(weak, raw[index].float() / 127.5 - 1, pad=4)  # round(0.125 * 28)
        assert offset is not None, "the weak view is a shift of its own image"
        assert shift_of(weak, raw[7 - index].float() / 127.5 - 1, pad=4) is None
        offsets.append(offset)
    assert len(set(offsets)) > 1  # each draw shifts anew
    # the same draw gives the same views (what a resumed run relies on), another draw others
    again = dataset.__getitems__(draws[:2])
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
        for a, b in zip(again, samples, strict=False)
    )
    assert not torch.equal(samples[0][2], samples[1][2])
    # shifts alone: the strong view is another shift of the same image, drawn independently
    views = image_views(images, ViewOptions(ops=0, cutout=0.0))
    shifted = TwoViews(views.images, views.weak, views.strong).__getitems__(draws)
    unit = raw.float() / 127.5 - 1
    pairs = [(shift_of(w, unit[i], 4), shift_of(s, unit[i], 4))
             for (i, _), (w, _, s) in zip(draws, shifted, strict=True)]  # fmt: skip
    assert all(a is not None and b is not None for a, b in pairs)
    assert sum(a != b for a, b in pairs) >= 4
    # Cutout alone: the strong view is the weak one but for a square of 14 (0.5 x 28) zeros
    views = image_views(images, ViewOptions(shift=0.0, ops=0, cutout=0.5))
    weak, _, strong = TwoViews(views.images, views.weak, views.strong)[(5, 99)]
    changed = (weak != strong).squeeze(0).nonzero()
    rows, cols = changed[:, 0], changed[:, 1]
    assert rows.max() - rows.min() < 14 and cols.max() - cols.min() < 14
    square = strong[0, rows.min() : rows.min() + 14, cols.min() : cols.min() + 14]
    assert (square == 0).float().mean() > 0.9 and (strong[weak != strong] == 0).all()


def test_under_ddp_every_draw_of_the_stream_has_its_own_seed():
    dataset = range(50)
    plain = [list(ShardedRandomSampler(dataset, 4, 5, 2, r, seed=3)) for r in (0, 1)]
    seeded = [list(ShardedRandomSampler(dataset, 4, 5, 2, r, seed=3, draw_seeds=True))
              for r in (0, 1)]  # fmt: skip
    for rank in (0, 1):
        assert [index for index, _ in seeded[rank]] == plain[rank]  # the same indices
    seeds = [seed for rank in seeded for _, seed in rank]
    assert len(set(seeds)) == len(seeds) == 40  # distinct on and across processes


def test_the_data_module_delivers_weak_label_strong_with_the_labels_hidden():
    data = DomainDataModule(TINY, batch_size=16, iterations_per_epoch=5, target_views={})
    data.setup("fit")
    batches = [b for b, _, _ in data.train_dataloader()]
    assert len(batches) == 5
    for b in batches:
        weak, y, strong = b["target"]
        assert weak.shape == strong.shape == (16, 1, 28, 28)
        assert (y == UNLABELLED).all()
        assert (weak != strong).flatten(1).any(dim=1).all()
    semi = DomainDataModule({**TINY, "samples": 200}, batch_size=200, iterations_per_epoch=1,
                            target_views={}, target_labels_per_class=2, val_fraction=0)  # fmt: skip
    semi.setup("fit")
    (b, _, _), *_ = list(semi.train_dataloader())
    labels = b["target"][1]  # the whole target set: the semi-supervised split's 2 per class
    assert (labels != UNLABELLED).sum() == 20
    assert set(labels[labels != UNLABELLED].tolist()) == set(range(10))


def test_the_refusals_say_what_to_change(tmp_path):
    with pytest.raises(DalibError, match="cutout must be in"):
        DomainDataModule(TINY, target_views={"cutout": 1.0})
    with pytest.raises(DalibError, match="takes shift, ops, magnitude, cutout; got unknown n"):
        DomainDataModule(TINY, target_views={"n": 2})
    for options in ({"shift": 0.5}, {"ops": -1}, {"magnitude": 11}):
        with pytest.raises(DalibError, match=r"data\.target_views"):
            ViewOptions(**options)
    moons = DomainDataModule("moons", target_views={})
    with pytest.raises(DalibError, match="no target images to augment"):
        moons.setup("fit")

    def fit_fixmatch(dataset, **data_options):
        data = DomainDataModule(dataset, batch_size=8, iterations_per_epoch=1, **data_options)
        model = DomainAdaptationModule(data.num_classes, data.input_shape, target_loss="fixmatch")
        quiet_fit(model, data, max_epochs=1, default_root_dir=tmp_path)

    with pytest.raises(DalibError, match=r"'moons' dataset has none to augment.*pseudo_label"):
        fit_fixmatch("moons")
    with pytest.raises(DalibError, match=r"set data.target_views: \{\}"):
        fit_fixmatch(TINY)
    data = DomainDataModule(TINY, batch_size=8, iterations_per_epoch=1, target_views={})
    model = DomainAdaptationModule(10, data.input_shape, target_loss="entropy")
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, limit_val_batches=0)  # fmt: skip
    with pytest.warns(DalibWarning, match="only a two-view target loss"):
        trainer.fit(model, data)


@pytest.mark.slow
def test_a_short_digits_run_trains_and_the_target_loss_reaches_the_backbone(shared_data, tmp_path):
    pl.seed_everything(0, workers=True)
    data = DomainDataModule({"name": "digits", "source": "MNIST", "target": "USPS"},
                            batch_size=32, iterations_per_epoch=40, target_views={},
                            selection_samples=64)  # fmt: skip
    fixmatch = {"name": "fixmatch", "threshold": 0.5}
    model = DomainAdaptationModule(10, data.input_shape, backbone="lenet", bottleneck_dim=64,
                                   lr=0.05, target_loss=fixmatch)  # fmt: skip
    trainer = quiet_fit(model, data, max_epochs=1, limit_val_batches=1, log_every_n_steps=10,
                        default_root_dir=tmp_path)  # fmt: skip
    metrics = trainer.logged_metrics
    assert all(math.isfinite(float(v)) for v in metrics.values())
    assert trainer.global_step == 40
    assert metrics["train/target_loss"] > 0  # some weak views were confident by step 40
    assert metrics["val/target_acc"] > 0.3  # it learned (10 classes: chance is 0.1)
    (batch_, _, _) = next(iter(data.train_dataloader()))
    terms = model.train().compute_losses(batch_, 1.0)
    assert terms["target_loss"] > 0
    model.zero_grad()
    terms["target_loss"].backward()
    first_conv = next(p for p in model.network.backbone.parameters() if p.dim() == 4)
    assert first_conv.grad.abs().sum() > 0


DDP = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.enable_progress_bar=false"]


def fit_on_two_processes(tmp_path, config: str, *extra: str) -> list[dict]:
    """``dalib fit`` of a toy config on two gloo processes: each rank's weights
    (``tests.test_mcd.SaveWeights``)."""
    callback = {"class_path": "tests.test_mcd.SaveWeights", "init_args": {"out_dir": str(tmp_path)}}
    command = [sys.executable, "-m", "dalib.cli", "fit", "-c", str(TOY / f"{config}.yaml"), *DDP,
               f"--trainer.callbacks+={json.dumps(callback)}",
               f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]


FIXMATCH_ON_TINY = [
    f"--data.dataset={json.dumps(TINY)}", "--data.target_views={}", "--data.batch_size=16",
    "--model.target_loss={name: fixmatch, threshold: 0.2}", "--data.selection_samples=32",
]  # fmt: skip


@pytest.mark.ddp
def test_fixmatch_on_two_cpu_processes_keeps_the_replicas_identical(tmp_path):
    ranks = fit_on_two_processes(tmp_path, "source_only", *FIXMATCH_ON_TINY,
                                 "--trainer.max_epochs=2", "--data.iterations_per_epoch=3",
                                 "--model.method=fixmatch")  # fmt: skip
    assert ranks[0]["steps"] == ranks[1]["steps"] == 6
    for name, value in ranks[0]["end"].items():
        assert torch.equal(value, ranks[1]["end"][name]), name
        assert not torch.equal(value, ranks[0]["start"][name]), name


@pytest.mark.ddp
def test_mean_teacher_on_two_cpu_processes_keeps_student_and_teacher_equal_across_ranks(tmp_path):
    ranks = fit_on_two_processes(tmp_path, "mean_teacher", "--trainer.max_epochs=2",
                                 "--data.iterations_per_epoch=3", "--data.batch_size=16",
                                 "--trainer.strategy=ddp_find_unused_parameters_true")  # fmt: skip
    assert ranks[0]["steps"] == ranks[1]["steps"] == 6
    teacher = [name for name in ranks[0]["end"] if ".teacher." in name]
    assert "objective.target_loss.teacher.head.weight" in teacher
    for name, value in ranks[0]["end"].items():
        assert torch.equal(value, ranks[1]["end"][name]), name
    for name in ("network.head.weight", "objective.target_loss.teacher.head.weight"):
        assert not torch.equal(ranks[0]["end"][name], ranks[0]["start"][name]), name


@pytest.mark.slow
def test_a_killed_fixmatch_run_resumes_to_the_uninterrupted_run(tmp_path):
    """The views of each draw come from its own seed, which the replayed sampler gives again:
    the resumed run sees the uninterrupted run's views and ends with its numbers."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    dropout = "--model.backbone={name: mlp, hidden_dims: [64, 64], dropout: 0.2}"  # draws too
    args = [*FIXMATCH_ON_TINY, "--model.checkpoint_every_n_steps=7", "--trainer.max_epochs=4",
            "--model.method=fixmatch", dropout]  # fmt: skip
    assert fit(whole, *args, config="source_only").wait(timeout=300) == 0

    last = cut / "runs" / "toy" / "source_only" / "version_0" / "checkpoints" / "last.ckpt"
    process = fit(cut, *args, config="source_only")
    killed = kill_when(process, last, lambda ckpt: ckpt["global_step"] >= 40)
    assert killed["global_step"] % 30 != 0 and killed["global_step"] < 4 * 30

    resumed = fit(cut, *args, "--ckpt_path=last", config="source_only")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert record(cut, "source_only") == record(whole, "source_only")
