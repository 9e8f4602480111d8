"""Image-folder benchmarks on tiny trees of real JPEG files built in a temporary folder."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from dalib import DomainAdaptationModule, DomainDataModule
from dalib.data import DATASETS
from dalib.errors import DalibError

CLASSES = [f"class_{i:02d}" for i in range(31)]


def office31_tree(root, per_class: int = 2, domains=("amazon", "webcam"), classes=CLASSES):
    """``root/office31/<domain>/images/<class>/<n>.jpg``: real JPEGs, one colour per class."""
    rng = np.random.default_rng(0)
    for domain in domains:
        for label, name in enumerate(classes):
            folder = root / "office31" / domain / "images" / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.full((24, 30, 3), label * 8, np.uint8) + rng.integers(0, 8, (24, 30, 3))
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.jpg")
    return root


SMALL = {"name": "office31", "source": "amazon", "target": "W", "resize": 36, "crop": 32}


def build(root, **options):
    return DATASETS.build({**SMALL, "root": str(root), **options})


def test_class_per_folder_domains_share_one_sorted_class_order(tmp_path):
    pair = build(office31_tree(tmp_path))
    assert pair.task == "A->W" and pair.num_classes == 31
    assert len(pair.source) == len(pair.target_train) == len(pair.target_test) == 62
    x, y = pair.source[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 2
    assert pair.source.samples[5][0].parent.name == "class_02"
    torch.testing.assert_close(pair.target_test[3][0], pair.target_test[3][0])  # no augmentation
    assert pair.source_eval.samples == pair.source.samples


def test_file_lists_name_the_images_and_labels(tmp_path):
    office31_tree(tmp_path)
    base = tmp_path / "office31"
    lines = [f"amazon/images/{name}/0.jpg {label}" for label, name in enumerate(CLASSES)]
    (base / "a.txt").write_text("\n".join(lines) + "\n")
    (base / "w.txt").write_text("\n".join(x.replace("amazon", "webcam") for x in lines))
    pair = build(tmp_path, file_lists={"source": "a.txt", "target": "w.txt"})
    assert len(pair.source) == 31 and pair.source.targets == list(range(31))


def test_train_and_test_lists_give_the_validation_and_evaluation_sets(tmp_path):
    """DomainNet's protocol: ``<domain>_train.txt`` to train and adapt on, ``_test.txt`` to
    evaluate on."""
    office31_tree(tmp_path, per_class=2)
    base = tmp_path / "office31"
    for domain in ("amazon", "webcam"):
        for split, image in (("train", 0), ("test", 1)):
            lines = [f"{domain}/images/{n}/{image}.jpg {c}" for c, n in enumerate(CLASSES)]
            (base / f"{domain}_{split}.txt").write_text("\n".join(lines[: 31 - image]) + "\n")
    lists = {"source": "amazon_train.txt", "target": "webcam_train.txt",
             "source_test": "amazon_test.txt", "target_test": "webcam_test.txt"}  # fmt: skip
    data = DomainDataModule({**SMALL, "root": str(tmp_path), "file_lists": lists})
    sizes = [len(data.splits[s]) for s in ("source_train", "source_val", "target_test")]
    assert sizes == [31, 30, 30]
    assert [p.name for p, _ in data.splits["target_test"].samples[:2]] == ["1.jpg", "1.jpg"]
    assert data.record()["source_eval_split"] == f"source_test list {base / 'amazon_test.txt'}"
    assert data.record()["target_eval_split"] == f"target_test list {base / 'webcam_test.txt'}"
    del lists["source_test"], lists["target_test"]
    data = DomainDataModule({**SMALL, "root": str(tmp_path), "file_lists": lists})
    assert data.record()["target_eval_split"] == (
        f"target list {base / 'webcam_train.txt'} (the images adapted to)"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [("amazon/images/class_00/9.jpg 0", "names 1 missing file"),
     ("amazon/images/class_00/0.jpg 31", "label 31 is outside 0..30"),
     ("no-label-here", "expected 'path label'")],
)  # fmt: skip
def test_bad_file_lists_are_refused(tmp_path, line, message):
    office31_tree(tmp_path)
    (tmp_path / "office31" / "a.txt").write_text(line + "\n")
    with pytest.raises(DalibError, match=message):
        build(tmp_path, file_lists={"source": "a.txt", "target": "a.txt"})


def test_classes_that_differ_between_domains_are_named(tmp_path):
    office31_tree(tmp_path, domains=("amazon",))
    office31_tree(tmp_path, domains=("webcam",), classes=[*CLASSES[:-1], "zebra"])
    with pytest.raises(DalibError, match=r"classes differ .*'class_30'.*'zebra'"):
        build(tmp_path)


def test_missing_root_domain_or_images_say_what_to_do(tmp_path):
    with pytest.raises(DalibError, match=r"office31 not found .*put Office-31 there"):
        build(tmp_path)
    office31_tree(tmp_path, domains=("amazon",))
    with pytest.raises(DalibError, match="webcam not found"):
        build(tmp_path)
    for name in CLASSES:
        (tmp_path / "office31" / "webcam" / name).mkdir(parents=True)
    with pytest.raises(DalibError, match="no images found"):
        build(tmp_path, source="webcam")
    with pytest.raises(DalibError, match="unknown Office-31 domain 'amzon'"):
        build(tmp_path, source="amzon")


def test_a_corrupt_image_is_named_or_skipped_with_a_warning(tmp_path):
    office31_tree(tmp_path)
    bad = tmp_path / "office31" / "amazon" / "images" / "class_00" / "1.jpg"
    bad.write_bytes(b"not a jpeg")
    pair = build(tmp_path)
    with pytest.raises(DalibError, match=r"cannot read image .*class_00/1.jpg"):
        pair.source[1]
    with pytest.warns(UserWarning, match="skipping unreadable image .*class_00/1.jpg"):
        pair = build(tmp_path, skip_corrupt=True)
    assert len(pair.source) == 61


@pytest.mark.slow
def test_a_few_training_steps_end_to_end_with_a_torchvision_backbone(tmp_path):
    office31_tree(tmp_path)
    pl.seed_everything(0, verbose=False)
    data = DomainDataModule(dataset={**SMALL, "root": str(tmp_path)}, batch_size=4,
                            iterations_per_epoch=3, eval_batch_size=16)  # fmt: skip
    model = DomainAdaptationModule(num_classes=data.num_classes, input_shape=data.input_shape,
                                   backbone={"name": "resnet18"}, bottleneck_dim=16,
                                   discrepancy="dann", backbone_lr_mult=0.1)  # fmt: skip
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, data)
    assert trainer.global_step == 3
    assert 0.0 <= float(trainer.callback_metrics["val/target_acc"]) <= 1.0
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_download_true_fetches_the_archives_then_reads_them(tmp_path, monkeypatch, server):
    """The whole path against the local test server: archive, download, extraction, dataset."""
    import tarfile

    from dalib.data import download as download_module

    office31_tree(tmp_path / "made")
    archives = []
    for domain in ("amazon", "webcam"):
        with tarfile.open(tmp_path / f"{domain}.tgz", "w:gz") as tar:
            tar.add(tmp_path / "made" / "office31" / domain, arcname=domain)
        server.files[f"/{domain}.tgz"] = (tmp_path / f"{domain}.tgz").read_bytes()
        archives.append(download_module.Archive(f"{server.url}/{domain}.tgz", f"{domain}.tgz",
                                                None, domain))  # fmt: skip
    monkeypatch.setitem(download_module.ARCHIVES, "office31", archives)
    with pytest.raises(DalibError, match="download: true"):
        build(tmp_path / "data")
    with pytest.warns(UserWarning, match="sha256|SHA-256|checksum"):
        pair = build(tmp_path / "data", download=True)
    assert len(pair.source) == len(pair.target_test) == 62
