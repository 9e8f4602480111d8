"""Parameter-based transfer: init_from, L2-SP, and unshared source/target extractors."""

import pytest
import pytorch_lightning as pl
import torch

from dalib import DomainAdaptationModule, DomainDataModule
from dalib.errors import DalibError
from tests.conftest import quiet_fit

MLP = {"name": "mlp", "hidden_dims": [32, 32]}


def train(module, steps: int, dataset) -> pl.Trainer:
    data = DomainDataModule(dataset=dataset, iterations_per_epoch=steps)
    return quiet_fit(module, data, max_steps=steps)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """An MLP trained on the moons (the "pretraining" task), as a dalib checkpoint."""
    torch.manual_seed(0)
    module = DomainAdaptationModule(num_classes=2, input_shape=(2,), backbone=MLP)
    trainer = train(module, 100, {"name": "moons"})
    path = tmp_path_factory.mktemp("pretrained") / "moons.ckpt"
    trainer.save_checkpoint(path)
    return path, {k: v.clone() for k, v in module.network.backbone.state_dict().items()}


def distance(network, start) -> float:
    return sum(float((p - start[k]).pow(2).sum()) for k, p in network.state_dict().items())


def backbone_distance(module, start) -> float:
    return distance(module.network.backbone, start)


def test_init_from_copies_the_backbone_weights(pretrained):
    path, start = pretrained
    module = DomainAdaptationModule(num_classes=2, input_shape=(2,), backbone=MLP, init_from=path)
    assert backbone_distance(module, start) > 0  # read as a fit starts, not at construction
    module.start()
    assert backbone_distance(module, start) == 0.0


def test_init_from_a_different_backbone_is_a_clear_error(pretrained):
    module = DomainAdaptationModule(
        num_classes=2, input_shape=(2,), backbone={"name": "mlp"}, init_from=pretrained[0]
    )
    with pytest.raises(DalibError, match=r"backbone weights in .* do not fit this model"):
        module.start()


@pytest.mark.slow
def test_l2_sp_keeps_weights_closer_to_their_start_than_plain_fine_tuning(pretrained):
    path, start = pretrained
    blobs = {"name": "blobs", "shift": 3.0}  # a new task: 3 classes, a new head
    distances = {}
    for l2_sp in (0.0, 1.0):
        torch.manual_seed(0)
        module = DomainAdaptationModule(
            num_classes=3, input_shape=(2,), backbone=MLP, init_from=path, l2_sp=l2_sp, lr=0.05
        )
        train(module, 150, blobs)
        distances[l2_sp] = backbone_distance(module, start)
        if l2_sp:
            weight = module.network.backbone[1].weight
            groups = module.optimizers().optimizer.param_groups
            group = next(g for g in groups if any(p is weight for p in g["params"]))
            assert group["weight_decay"] == 0.0  # L2-SP replaces decay towards zero
    assert distances[1.0] < 0.25 * distances[0.0], distances


def test_l2_sp_term_is_half_the_squared_distance_to_the_start(pretrained):
    path, _ = pretrained
    module = DomainAdaptationModule(
        num_classes=2, input_shape=(2,), backbone=MLP, init_from=path, l2_sp=0.5
    )
    module.start()
    with torch.no_grad():
        for p in module.network.backbone.parameters():
            p.add_(0.1)
    batch = {"source": (torch.randn(4, 2), torch.zeros(4).long()), "target": None}
    terms = module.compute_losses(batch, progress=0.0)
    expected = 0.5 * sum(p.numel() * 0.01 for p in module.network.backbone.parameters())
    assert float(terms["l2_sp"].detach()) == pytest.approx(expected, rel=1e-4)
    assert float(terms["loss"].detach()) == pytest.approx(
        float(terms["source_ce"].detach()) + 0.5 * expected
    )


@pytest.mark.slow
def test_unshared_extractors_separate_and_the_tie_holds_them_together(pretrained):
    path, _ = pretrained
    distances = {}
    for tie in (0.0, 10.0):
        torch.manual_seed(0)
        module = DomainAdaptationModule(
            num_classes=2, input_shape=(2,), backbone=MLP, init_from=path, discrepancy="coral",
            unshared=tie, lr=0.05,
        )  # fmt: skip
        module.start()
        assert distance(module.network.target_backbone, module.network.backbone.state_dict()) == 0
        train(module, 100, {"name": "moons", "angle": 50})
        distances[tie] = distance(
            module.network.target_backbone, module.network.backbone.state_dict()
        )
    assert distances[0.0] > 0  # θ_s ≠ θ_t: each domain trains its own extractor
    assert distances[10.0] < 0.25 * distances[0.0], distances
    x = torch.randn(5, 2)
    module.eval()
    with torch.no_grad():  # target data goes through θ_t, source data through θ_s
        torch.testing.assert_close(
            module(x), module.network.head(module.network.target_backbone(x))
        )
        torch.testing.assert_close(
            module.network.features(x, "source"),
            module.network.bottleneck(module.network.backbone(x)),
        )


def test_init_from_reads_a_checkpoint_of_dalib_0_1s_flat_layout(pretrained, tmp_path):
    """dalib 0.1 named the weights ``backbone.…``, ``discrepancy.…`` (no ``network.`` prefix)."""
    path, start = pretrained
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"] = {
        key.partition(".")[2]: value for key, value in checkpoint["state_dict"].items()
    }
    old = tmp_path / "flat.ckpt"
    torch.save(checkpoint, old)
    module = DomainAdaptationModule(num_classes=2, input_shape=(2,), backbone=MLP, init_from=old)
    module.start()
    assert backbone_distance(module, start) == 0.0
