"""Data-parallel training on two CPU processes (gloo): gathered discrepancies, sharded data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from pytorch_lightning import Callback
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dalib import DomainAdaptationModule, DomainDataModule
from dalib.distributed import ShardedRandomSampler
from dalib.errors import DalibError
from dalib.selection.scores import SCORES
from dalib.target_losses import UNLABELLED
from tests.conftest import REPO, TOY

WORLD = 2
N = 2 * WORLD * 8  # samples of each domain in the whole batch
# Sliced Wasserstein with fixed directions (seed): with seed=None each call draws its own from
# torch's generator, the same in every process only while all of them consume it alike.
GATHERED = {
    "mmd": "mmd",
    "coral": "coral",
    "sinkhorn": "sinkhorn",
    "jmmd": "jmmd",
    "deepjdot": "deepjdot",
    "emd": "emd",
    "sliced_wasserstein": {"name": "sliced_wasserstein", "seed": 0},
}
# Instance weights of the N source samples: the batch carries their indices, D gets w_s
WEIGHTS = torch.linspace(0.2, 3.0, N, dtype=torch.float64)
CASES = [(name, weighted) for name in GATHERED for weighted in (False, True)]


def make_module(
    discrepancy: str | dict, weighted: bool = False, **options
) -> DomainAdaptationModule:
    """The same float64 network in every process; no BatchNorm, so no per-process statistics."""
    torch.manual_seed(0)
    module = DomainAdaptationModule(
        num_classes=2,
        input_shape=(3,),
        backbone={"name": "mlp", "hidden_dims": [16, 8]},
        discrepancy=discrepancy,
        **options,
    )
    if weighted:
        module.objective.source_weights = WEIGHTS
    return module.double()


def full_batch(n: int = N) -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        "source": (
            torch.randn(n, 3, generator=g, dtype=torch.float64),
            torch.randint(0, 2, (n,), generator=g),
            torch.arange(n),  # sample indices, which select the instance weights
        ),
        "target": (
            torch.randn(n, 3, generator=g, dtype=torch.float64) * 1.5 + 1.0,
            torch.full((n,), UNLABELLED),
        ),
    }


def shard(batch: dict, rank: int) -> dict:
    return {domain: tuple(t.chunk(WORLD)[rank] for t in pair) for domain, pair in batch.items()}


def extractor(module: DomainAdaptationModule) -> list[nn.Parameter]:
    return list(module.network.backbone.parameters())


class Term(nn.Module):
    """What DDP wraps: one term of the module's objective on one paired batch."""

    def __init__(self, module: DomainAdaptationModule, term: str = "discrepancy") -> None:
        super().__init__()
        self.module = module
        self.term = term

    def forward(self, batch: dict) -> torch.Tensor:
        return self.module.compute_losses(batch, progress=0.5)[self.term]


def ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    """Each measure's discrepancy on this rank's half of the batch, and DDP's averaged gradient."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    import dalib.objective

    gathered_calls = []
    gather_inputs = dalib.objective.gather_inputs

    def counted(measure, inputs):
        gathered_calls.append(type(measure).__name__)
        return gather_inputs(measure, inputs)

    dalib.objective.gather_inputs = counted
    results = {}
    for key, spec, weighted, options in [
        *((case, GATHERED[case[0]], case[1], {}) for case in CASES),
        ("mmd_per_process", "mmd", False, {"gather_discrepancy": False}),
        ("dann", "dann", False, {}),
    ]:
        module = make_module(spec, weighted, **options)
        ddp = DistributedDataParallel(Term(module), find_unused_parameters=True)
        value = ddp(shard(full_batch(), rank))
        value.backward()
        results[key] = {"value": value.detach(), "grads": [p.grad for p in extractor(module)]}
    results["gathered_calls"] = list(gathered_calls)  # the measures above
    module = make_module("mmd", weighted=True)
    ddp = DistributedDataParallel(Term(module, "source_ce"), find_unused_parameters=True)
    value = ddp(shard(full_batch(), rank))
    value.backward()
    results["weighted_source_ce"] = {
        "value": value.detach(),
        "grads": [p.grad for p in module.network.parameters() if p.grad is not None],
    }
    try:
        wdgrl = {"name": "wdgrl", "critic_steps": 5}
        make_module(wdgrl).compute_losses(shard(full_batch(), rank), progress=0.5)
    except DalibError as error:
        results["wdgrl_error"] = str(error)
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(ddp_worker, args=(str(out / "init"), str(out)), nprocs=WORLD)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize(("name", "weighted"), CASES)
@pytest.mark.ddp
def test_gathered_discrepancy_and_its_gradients_equal_one_process_on_the_whole_batch(
    ddp_results, name, weighted
):
    module = make_module(GATHERED[name], weighted)
    value = module.compute_losses(full_batch(), progress=0.5)["discrepancy"]
    grads = torch.autograd.grad(value, extractor(module))
    assert all(g.abs().sum() > 0 for g in grads), "every layer of the extractor gets a gradient"
    if weighted:  # the weights matter: the unweighted estimate differs
        unweighted = make_module(GATHERED[name]).compute_losses(full_batch(), progress=0.5)
        assert abs(unweighted["discrepancy"] - value).item() > 1e-3 * abs(value).item()
    for rank in ddp_results:
        result = rank[(name, weighted)]
        torch.testing.assert_close(result["value"], value.detach(), rtol=1e-5, atol=1e-8)
        for got, want in zip(result["grads"], grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)


@pytest.mark.ddp
def test_without_the_gather_each_process_computes_a_different_estimate(ddp_results):
    value = make_module("mmd").compute_losses(full_batch(), progress=0.5)["discrepancy"]
    per_process = [rank["mmd_per_process"]["value"] for rank in ddp_results]
    assert per_process[0] != per_process[1]
    assert all(abs(v - value) > 1e-3 for v in per_process)


@pytest.mark.ddp
def test_adversarial_measures_are_not_gathered(ddp_results):
    for rank in ddp_results:
        gathered = ["KernelMMD", "CORAL", "SinkhornDistance", "JointMMD", "DeepJDOT"]
        gathered += ["EarthMoverDistance", "SlicedWasserstein"]
        assert rank["gathered_calls"] == [m for m in gathered for _ in ("plain", "weighted")]
        assert sum(g.abs().sum() for g in rank["dann"]["grads"]) > 0


@pytest.mark.ddp
def test_wdgrl_refuses_inner_critic_steps_that_would_differ_between_processes(ddp_results):
    for rank in ddp_results:
        assert "set critic_steps: 1" in rank["wdgrl_error"]


def test_sharded_sampler_splits_each_global_batch_between_the_processes():
    data = torch.utils.data.TensorDataset(torch.arange(50))
    shards = [ShardedRandomSampler(data, 3, 4, 3, rank, seed=7) for rank in range(3)]
    for sampler in shards:
        sampler.set_epoch(1)
    drawn = [list(sampler) for sampler in shards]
    assert all(len(d) == 12 for d in drawn)
    assert len({i for d in drawn for i in d}) == 36, (
        "one pass over 50 samples: no sample drawn twice"
    )
    stream = torch.stack([torch.tensor(d).view(3, 4) for d in drawn], dim=1).flatten()
    generator = torch.Generator().manual_seed(hash((7, 1)) % 2**63)
    assert stream.tolist() == torch.randperm(50, generator=generator)[:36].tolist()


def test_class_balanced_shards_are_blocks_of_one_weighted_stream():
    data = torch.utils.data.TensorDataset(torch.arange(6))
    weights = torch.tensor([1.0, 1.0, 1.0, 1.0, 10.0, 10.0])
    drawn = [list(ShardedRandomSampler(data, 4, 5, 2, r, seed=3, weights=weights)) for r in (0, 1)]
    stream = torch.stack([torch.tensor(d).view(4, 5) for d in drawn], dim=1).flatten()
    generator = torch.Generator().manual_seed(hash((3, 0)) % 2**63)
    expected = torch.multinomial(weights, 40, replacement=True, generator=generator)
    assert stream.tolist() == expected.tolist()


def test_under_ddp_the_data_module_shards_training_and_evaluation_data():
    modules = []
    for rank in range(WORLD):
        dm = DomainDataModule(batch_size=16)  # moons: 270 source, 300 target training samples
        dm.trainer = SimpleNamespace(world_size=WORLD, global_rank=rank)
        dm.setup("fit")
        modules.append(dm)
    assert modules[0].steps_per_epoch() == 10  # the larger domain once: ceil(300 / (2 × 16))
    for rank, dm in enumerate(modules):
        dm.iterations_per_epoch = 8  # 2 × 8 × 16 = 256 <= 270: one pass, no repeat
        for domain, loader in dm.train_dataloader().iterables.items():
            assert isinstance(loader.sampler, ShardedRandomSampler), domain
            assert loader.sampler.rank == rank and len(list(loader)) == 8
    for domain in ("source", "target"):
        shards = [set(dm.train_dataloader().iterables[domain].sampler) for dm in modules]
        assert len(shards[0]) == len(shards[1]) == 128 and not shards[0] & shards[1]
    for idx, split in enumerate(["source_val", "target_test"]):
        seen = sorted(i for dm in modules for i in dm.val_dataloader()[idx].sampler)
        assert seen == list(range(len(modules[0].splits[split])))


def test_more_processes_than_evaluation_samples_is_refused():
    dm = DomainDataModule()  # moons: 30 source validation samples
    dm.trainer = SimpleNamespace(world_size=32, global_rank=0)
    dm.setup("validate")
    with pytest.raises(DalibError, match="source_val set has 30 samples, fewer than the 32"):
        dm.val_dataloader()


class RecordEvaluation(Callback):
    """Writes each rank's final metrics, evaluation and training indices, and the model."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_fit_end(self, trainer, module) -> None:
        record = {
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "eval_indices": [list(loader.sampler) for loader in trainer.val_dataloaders],
            "train_indices": [list(loader.sampler) for loader in trainer.train_dataloader.values()],
            "steps": trainer.global_step,
        }
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
        if trainer.is_global_zero:
            torch.save(module.state_dict(), self.out_dir / "model.pt")


@pytest.mark.ddp
def test_dalib_fit_on_two_processes_evaluates_every_sample_once_with_the_same_metrics(tmp_path):
    data_options = {
        "dataset": {"name": "moons", "angle": 35, "n_test": 101},
        "val_fraction": 0.15,  # 45 source validation samples: odd, as the 101 target samples
        "eval_batch_size": 10,  # the processes run different numbers of evaluation batches
    }
    callback = {
        "class_path": f"{__name__}.RecordEvaluation",
        "init_args": {"out_dir": str(tmp_path)},
    }
    command = [
        sys.executable,
        "-m",
        "dalib.cli",
        "fit",
        "-c",
        str(TOY / "mmd_ddp.yaml"),
        "--trainer.max_epochs=2",
        "--data.iterations_per_epoch=3",
        f"--data.dataset={json.dumps(data_options['dataset'])}",
        f"--data.val_fraction={data_options['val_fraction']}",
        f"--data.eval_batch_size={data_options['eval_batch_size']}",
        f"--trainer.callbacks+={json.dumps(callback)}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]

    val = [
        {k: v for k, v in r["metrics"].items() if k.startswith(("val/", "select/"))} for r in ranks
    ]
    assert len(val[0]) == 4 + len(SCORES.entries(plugins=False)) and val[0] == val[1]
    assert ranks[0]["metrics"]["train/discrepancy"] == ranks[1]["metrics"]["train/discrepancy"]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 6
    data = DomainDataModule(**data_options)
    data.setup("fit")
    for split, idx in [("source_val", 0), ("target_test", 1)]:
        seen = ranks[0]["eval_indices"][idx] + ranks[1]["eval_indices"][idx]
        assert sorted(seen) == list(range(len(data.splits[split])))
    for domain in range(2):  # training: same number of samples, none shared in the epoch
        first, second = (set(r["train_indices"][domain]) for r in ranks)
        assert len(ranks[0]["train_indices"][domain]) == 3 * 16 and not first & second

    model = DomainAdaptationModule(
        num_classes=2, input_shape=(2,), bottleneck_dim=32, discrepancy="mmd"
    )  # mmd_ddp.yaml's network
    model.load_state_dict(torch.load(tmp_path / "model.pt"))
    model.eval()
    with torch.no_grad():
        for split, domain in [("source_val", "source"), ("target_test", "target")]:
            x, y = map(torch.stack, zip(*data.splits[split], strict=True))
            logits = model(x)
            accuracy = (logits.argmax(1) == y).double().mean().item()
            ce = F.cross_entropy(logits, y).item()
            assert ranks[0]["metrics"][f"val/{domain}_acc"] == pytest.approx(accuracy, abs=1e-6)
            assert ranks[0]["metrics"][f"val/{domain}_ce"] == pytest.approx(ce, abs=1e-5)


@pytest.mark.ddp
def test_weighted_source_loss_averaged_by_ddp_is_the_weighted_mean_of_the_whole_batch(
    ddp_results,
):
    module = make_module("mmd", weighted=True)
    value = module.compute_losses(full_batch(), progress=0.5)["source_ce"]
    used = [p for p in module.network.parameters()]
    grads = torch.autograd.grad(value, used, allow_unused=True)
    grads = [g for g in grads if g is not None]
    per_rank = [rank["weighted_source_ce"] for rank in ddp_results]
    # DDP averages the processes' gradients (and their losses, in the reported mean)
    mean = torch.stack([r["value"] for r in per_rank]).mean()
    torch.testing.assert_close(mean, value.detach(), rtol=1e-10, atol=1e-12)
    for rank in per_rank:
        for got, want in zip(rank["grads"], grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
