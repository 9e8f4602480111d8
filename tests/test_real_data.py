"""The real benchmark files of ../shared/data: sizes and classes as its README states them."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from dalib.data import DATASETS, DomainDataModule
from dalib.data.datamodule import dataset_labels
from dalib.errors import DalibError

pytestmark = pytest.mark.usefixtures("shared_data")


@pytest.mark.slow
def test_mnist_and_usps_sizes_shapes_and_classes():
    m2u = DATASETS.build({"name": "digits", "source": "MNIST", "target": "USPS"})
    assert (len(m2u.source), len(m2u.target_train), len(m2u.target_test)) == (60_000, 7_291, 2_007)
    u2m = DATASETS.build({"name": "digits", "source": "usps", "target": "mnist"})
    assert (len(u2m.source), len(u2m.target_test)) == (7_291, 10_000)
    for dataset in (m2u.source, m2u.target_train, u2m.target_test):
        x, _ = dataset[0]
        assert x.shape == (1, 28, 28) and -1.0 <= x.min() < x.max() <= 1.0
        assert sorted(dataset_labels(dataset).unique().tolist()) == list(range(10))
    assert m2u.task == "MNIST->USPS" and u2m.task == "USPS->MNIST"


@pytest.mark.parametrize(
    ("domain", "size"), [("A", 958), ("C", 1_123), ("D", 157), ("W", 295)]
)  # fmt: skip
def test_office_caltech10_surf_domains(domain, size):
    pair = DATASETS.build({"name": "office_caltech10", "source": domain, "target": domain})
    x, y = pair.source.tensors
    assert x.shape == (size, 800)
    assert sorted(y.unique().tolist()) == list(range(10))
    # the release's preprocessing: rows divided by their sum, then per-domain z-score
    assert np.allclose(x.mean(0).numpy(), 0, atol=1e-5)


@pytest.mark.slow
def test_preprocessed_surf_reproduces_the_published_1nn_baseline():
    """1-NN without adaptation averages 31.4% over the 12 tasks (JDA paper, Long et al. 2013)."""
    accuracies = []
    for s, t in itertools.permutations("ACDW", 2):
        pair = DATASETS.build({"name": "office_caltech10", "source": s, "target": t})
        (xs, ys), (xt, yt) = pair.source.tensors, pair.target_test.tensors
        knn = KNeighborsClassifier(n_neighbors=1).fit(xs.numpy(), ys.numpy())
        accuracies.append(100 * knn.score(xt.numpy(), yt.numpy()))
    assert np.mean(accuracies) == pytest.approx(31.4, abs=0.05)


@pytest.mark.slow
def test_digits_train_batches_pair_mnist_with_unlabelled_usps():
    data = DomainDataModule(dataset={"name": "digits"}, batch_size=8, iterations_per_epoch=2)
    data.setup("fit")
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    batch, _, _ = next(iter(data.train_dataloader()))
    assert batch["source"][0].shape == batch["target"][0].shape == (8, 1, 28, 28)
    assert (batch["target"][1] == -1).all()


@pytest.mark.slow
def test_mnist_as_an_svhn_target_is_32x32_with_three_equal_channels():
    from dalib.data.digits import load_digits

    mnist = load_digits("MNIST", train=False, channels=3, size=32, root=None, download=False)
    x, _ = mnist[0]
    assert len(mnist) == 10_000 and x.shape == (3, 32, 32)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_missing_digits_say_how_to_download(tmp_path):
    with pytest.raises(DalibError, match=r"MNIST not found under .*download: true"):
        DATASETS.build({"name": "digits", "root": str(tmp_path)})
