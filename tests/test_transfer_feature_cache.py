"""Feature extraction: a frozen backbone runs once; later runs read its cached features."""

import pytest
import torch
from sklearn.datasets import dump_svmlight_file

import dalib.transfer  # noqa: F401 - registers the cached_features dataset
from dalib import DATASETS, DomainDataModule
from dalib.models import BACKBONES, MLP
from tests.conftest import TOY, only_result, run_dalib


class CountingMLP(MLP):
    """An MLP that counts the samples it has seen."""

    samples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CountingMLP.samples += len(x)
        return super().forward(x)


@BACKBONES.register("counting_mlp")
def counting_mlp(input_shape, hidden_dims=(16,)) -> CountingMLP:
    return CountingMLP(input_shape[0], hidden_dims)


def spec(tmp_path, angle: float = 35, seed: int = 0) -> dict:
    torch.manual_seed(seed)  # the random backbone's weights
    return {
        "name": "cached_features",
        "dataset": {"name": "moons", "angle": angle},
        "backbone": {"name": "counting_mlp", "hidden_dims": [16]},
        "cache_dir": str(tmp_path),
    }


def test_second_run_reads_the_cache_and_does_not_call_the_backbone(tmp_path):
    CountingMLP.samples = 0
    first = DATASETS.build(spec(tmp_path))
    seen = CountingMLP.samples
    raw = DATASETS.build({"name": "moons", "angle": 35})
    assert seen == len(raw.source) + len(raw.target_train) + len(raw.target_test)
    assert len(list(tmp_path.glob("*.pt"))) == 1

    second = DATASETS.build(spec(tmp_path))
    assert CountingMLP.samples == seen  # not one more sample through the backbone
    for part in ("source", "target_train", "target_test"):
        x1, y1 = getattr(first, part).tensors
        x2, y2 = getattr(second, part).tensors
        assert torch.equal(x1, x2) and torch.equal(y1, y2)

    torch.manual_seed(0)  # the same weights, computed here independently of the cache
    backbone = BACKBONES.build({"name": "counting_mlp", "hidden_dims": [16]}, input_shape=(2,))
    x_s = torch.stack([x for x, _ in raw.source])
    with torch.no_grad():
        torch.testing.assert_close(first.source.tensors[0], backbone(x_s))
    assert torch.equal(first.source.tensors[1], raw.source.tensors[1].long())


@pytest.mark.parametrize("change", [{"seed": 1}, {"angle": 20}])
def test_other_weights_or_other_data_get_their_own_cache_file(tmp_path, change):
    DATASETS.build(spec(tmp_path))
    DATASETS.build(spec(tmp_path, **change))
    assert len(list(tmp_path.glob("*.pt"))) == 2


@pytest.mark.slow
def test_dann_head_trains_on_cached_features_from_the_command_line(tmp_path):
    cache = tmp_path / "cache"
    data = (
        "--data.dataset={name: cached_features, dataset: {name: moons, angle: 35}, "
        f"backbone: {{name: mlp, hidden_dims: [32]}}, cache_dir: {cache}}}"
    )
    args = ["fit", "-c", str(TOY / "dann.yaml"), data, "--model.backbone=identity"]
    args += ["--trainer.max_epochs=2", "--data.iterations_per_epoch=5"]
    run_dalib(args, tmp_path / "runs")
    result = only_result(tmp_path / "runs")
    assert result["task"].endswith("cached mlp features")
    assert len(list(cache.glob("*.pt"))) == 1
    module_input = DomainDataModule(dataset=result["config"]["data"]["dataset"]).input_shape
    assert tuple(module_input) == (32,)


def test_cache_key_covers_batchnorm_counters_and_changes_with_them():
    from dalib.transfer.feature_cache import cache_key

    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    parts = {"source": torch.utils.data.TensorDataset(torch.zeros(4, 2), torch.zeros(4))}
    before = cache_key("moons", "mlp", net, parts)
    net[1].num_batches_tracked += 1  # a 0-d buffer
    assert cache_key("moons", "mlp", net, parts) != before


def test_cached_features_keep_the_source_test_set_and_what_the_record_says(tmp_path):
    """A dataset's own source test set stays the validation set, with its origins and labels."""
    x = torch.randn(20, 2).numpy()
    files = {}
    for part, n in (("source", 20), ("target", 20), ("source_test", 8), ("target_test", 6)):
        dump_svmlight_file(x[:n], (-1) ** torch.arange(n).numpy(), str(tmp_path / f"{part}.svm"))
        files[part] = f"{part}.svm"
    inner = {"name": "features", "root": str(tmp_path), **files}
    cached = DomainDataModule({**spec(tmp_path), "dataset": inner})
    plain = DomainDataModule(inner)
    assert [len(cached.splits[s]) for s in ("source_train", "source_val", "target_test")] == [
        20, 8, 6,
    ]  # fmt: skip
    assert cached.record() == plain.record()
    assert cached.record()["label_mapping"] == {"-1": 0, "1": 1}
