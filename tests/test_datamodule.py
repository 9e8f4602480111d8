import pytest
import torch
from torch.utils.data import TensorDataset

from dalib.data import DATASETS, DomainDataModule, DomainPair
from dalib.errors import DalibError
from dalib.target_losses import UNLABELLED


def _pair(source_dim: int, target_dim: int, n_target: int) -> DomainPair:
    def data(n, dim):
        return TensorDataset(torch.randn(n, dim), torch.arange(n) % 2)

    return DomainPair(
        "test",
        "a->b",
        data(20, source_dim),
        data(n_target, target_dim),
        data(10, target_dim),
        num_classes=2,
    )


DATASETS.register("test_empty_target")(lambda: _pair(2, 2, n_target=0))
DATASETS.register("test_wider_target")(lambda: _pair(2, 3, n_target=20))


def make(**kwargs) -> DomainDataModule:
    dm = DomainDataModule(**kwargs)
    dm.setup("fit")
    return dm


def test_each_step_pairs_a_source_and_a_target_batch_for_a_fixed_number_of_iterations():
    dm = make(batch_size=16, iterations_per_epoch=7)
    steps = list(dm.train_dataloader())
    assert len(steps) == 7
    for batch, _, _ in steps:
        assert batch["source"][0].shape == batch["target"][0].shape == (16, 2)


def test_default_epoch_sees_the_larger_training_domain_once():
    dm = make(batch_size=32)  # moons: 270 source training samples, 300 target samples
    assert dm.steps_per_epoch() == 10
    assert len(list(dm.train_dataloader())) == 10


def test_target_training_labels_are_hidden():
    dm = make(batch_size=50)
    for batch, _, _ in dm.train_dataloader():
        assert (batch["target"][1] == UNLABELLED).all()


def test_semi_supervised_split_keeps_exactly_k_true_labels_per_class():
    dm = make(target_labels_per_class=3)
    target = dm.splits["target_train"]
    true = dm.pair.target_train.tensors[1]
    kept = {i: target[i][1] for i in range(len(target)) if target[i][1] != UNLABELLED}
    assert len(kept) == 6
    assert all(true[i] == y for i, y in kept.items())
    assert sorted(kept.values()) == [0, 0, 0, 1, 1, 1]


def test_source_validation_is_held_out_and_evaluation_covers_the_target_test_split():
    dm = make(val_fraction=0.2)
    train, val = dm.splits["source_train"], dm.splits["source_val"]
    assert set(train.indices).isdisjoint(val.indices)
    assert len(train) + len(val) == len(dm.pair.source) and len(val) == 60
    source_loader, target_loader, _ = dm.val_dataloader()
    assert sum(len(x) for x, _ in target_loader) == len(dm.pair.target_test)
    assert sum(len(x) for x, _ in source_loader) == 60
    assert [len(loader.dataset) for loader in dm.test_dataloader()] == [
        60,
        len(target_loader.dataset),
    ]


def test_val_fraction_zero_trains_on_all_the_source_and_validates_on_none():
    dm = make(val_fraction=0.0)
    assert sorted(dm.splits["source_train"].indices) == list(range(len(dm.pair.source)))
    source_loader, target_loader, _ = dm.val_dataloader()
    assert len(source_loader.dataset) == 0 and list(source_loader) == []
    assert sum(len(x) for x, _ in target_loader) == len(dm.pair.target_test)


def test_selection_sees_target_training_samples_without_labels():
    dm = make(selection_samples=50)
    (unlabelled_loader,) = dm.val_dataloader()[2:]
    x, y = next(iter(unlabelled_loader))
    assert len(unlabelled_loader.dataset) == 50 and (y == UNLABELLED).all()
    target_inputs = dm.pair.target_train.tensors[0]
    assert all((target_inputs == row).all(1).any() for row in x)


def test_an_empty_target_is_refused():
    with pytest.raises(DalibError, match="target training set of 'test_empty_target' is empty"):
        make(dataset="test_empty_target")


def test_mismatched_input_shapes_are_refused():
    with pytest.raises(DalibError, match=r"same shape, got source \(2,\), target training \(3,\)"):
        make(dataset="test_wider_target")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "moon"}, "did you mean 'moons'"),
        ({"dataset": {"name": "moons", "angel": 3}}, "unknown option 'angel'"),
        ({"batch_size": 0}, "batch sizes must be >= 1"),
        ({"val_fraction": 1.0}, "val_fraction must be in"),
        ({"val_fraction": -0.1}, r"val_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_data_configuration_names_what_to_fix(kwargs, message):
    with pytest.raises(DalibError, match=message):
        make(**kwargs)


def test_embedded_data_is_seeded_and_shifted():
    a, b = DATASETS.build("moons"), DATASETS.build("moons")
    assert torch.equal(a.source.tensors[0], b.source.tensors[0])
    (x_s, y_s), (x_t, y_t) = a.source.tensors, a.target_train.tensors
    # the rotation is about the centre of the moons: each moon moves, the joint centre does not
    assert (x_s[y_s == 0].mean(0) - x_t[y_t == 0].mean(0)).norm() > 0.3
    blobs = DATASETS.build({"name": "blobs", "shift": 3.0})
    assert (blobs.target_train.tensors[0].mean(0) - blobs.source.tensors[0].mean(0))[0] > 2.0


DATASETS.register("test_imbalanced")(
    lambda: DomainPair(
        "test",
        "a->b",
        TensorDataset(torch.randn(200, 2), (torch.arange(200) < 180).long()),
        TensorDataset(torch.randn(50, 2), torch.zeros(50).long()),
        TensorDataset(torch.randn(10, 2), torch.zeros(10).long()),
        num_classes=2,
    )
)


def test_class_balanced_sampling_evens_out_an_imbalanced_source():
    torch.manual_seed(0)
    plain = make(dataset="test_imbalanced", batch_size=100, iterations_per_epoch=20)
    balanced = make(
        dataset="test_imbalanced", batch_size=100, iterations_per_epoch=20, class_balanced=True
    )

    def share_of_class_0(dm):
        labels = torch.cat([b["source"][1] for b, _, _ in dm.train_dataloader()])
        return (labels == 0).float().mean().item()

    assert share_of_class_0(plain) == pytest.approx(0.1, abs=0.03)
    assert share_of_class_0(balanced) == pytest.approx(0.5, abs=0.05)


def test_loader_workers_default_to_none_for_data_in_memory():
    dm = make()
    assert dm.num_workers == 0 and dm.train_dataloader().iterables["source"].num_workers == 0
    assert make(num_workers=2).num_workers == 2
