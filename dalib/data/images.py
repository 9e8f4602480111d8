"""Image-folder benchmarks: Office-31, Office-Home, VisDA-2017 and DomainNet.

Two layouts, as the published protocols use them:

- class-per-folder: ``<root>/<benchmark folder>/<domain>/[images/]<class>/<image>``; the class
  order is the sorted folder names, shared by all domains, and checked against the benchmark's
  class count;
- file lists: lines ``<path relative to the benchmark folder> <label>`` (``file_lists:
  {source: ..., target: ...}``, paths relative to the benchmark folder), as DomainNet's
  ``<domain>_train.txt``/``<domain>_test.txt`` and the Transfer-Learning-Library's image lists;
  the optional keys ``target_test`` (the images every target accuracy is measured on, instead of
  the target list) and ``source_test`` (the source validation set, instead of a hold-out of the
  source list) state a train/test protocol, such as DomainNet's.

Transforms are the standard ones: training resize to 256x256, random crop 224, horizontal flip;
evaluation resize 256x256, centre crop 224; ImageNet normalisation (``normalize: symmetric``
gives ``(p - 128) / 128`` on 0..255 pixels, which the MobileNetV2 checkpoint of ../shared/weights
expects). With ``data.target_views`` the target training images also come as FixMatch's weak
(the training transform) and strong (with RandAugment and Cutout) views (``ImageList.views``).

``download: true`` fetches the benchmark's archives (``dalib.data.download.ARCHIVES``, the
public locations the field uses) into the data folder first: resumable, and safely extracted.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from dalib.data.domains import DATASETS, DomainPair
from dalib.data.download import ARCHIVES, fetch
from dalib.data.roots import data_root, require
from dalib.data.views import ImageViews, ViewOptions, compose
from dalib.errors import DalibError

NORMALIZATION = {
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "symmetric": ([128 / 255] * 3, [128 / 255] * 3),  # pixels p in 0..255 -> (p - 128) / 128
}


@dataclass(frozen=True)
class ImageBenchmark:
    """Where a benchmark's domains live under the data folder, and how many classes it has."""

    title: str
    folder: str
    num_classes: int
    domains: Mapping[str, str]  # short name -> domain folder

    def domain(self, name: str) -> str:
        """The short name of a domain given by its short or folder name (any case)."""
        for short, folder in self.domains.items():
            if name.lower() in (short.lower(), folder.lower()):
                return short
        known = ", ".join(f"{k} ({v})" for k, v in self.domains.items())
        raise DalibError(f"unknown {self.title} domain {name!r}; choose one of {known}")


BENCHMARKS = {
    "office31": ImageBenchmark(
        "Office-31", "office31", 31, {"A": "amazon", "D": "dslr", "W": "webcam"}
    ),
    "officehome": ImageBenchmark(
        "Office-Home", "OfficeHome", 65,
        {"Ar": "Art", "Cl": "Clipart", "Pr": "Product", "Rw": "Real_World"},
    ),
    "visda2017": ImageBenchmark(
        "VisDA-2017", "visda-2017", 12, {"Syn": "train", "Real": "validation"}
    ),
    "domainnet": ImageBenchmark(
        "DomainNet", "domainnet", 345,
        {"c": "clipart", "i": "infograph", "p": "painting", "q": "quickdraw", "r": "real",
         "s": "sketch"},
    ),
}  # fmt: skip


@dataclass(frozen=True)
class ImageTransforms:
    """The transforms of a benchmark's images: resize to ``resize`` x ``resize``, crop
    ``crop`` (random in training, central in evaluation), ``normalize``."""

    resize: int
    crop: int
    normalize: str

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZATION:
            raise DalibError(
                f"normalize must be one of {', '.join(NORMALIZATION)}, got {self.normalize!r}"
            )
        if self.crop > self.resize:
            raise DalibError(f"crop ({self.crop}) must not exceed resize ({self.resize})")

    def transform(self, train: bool, strong: ViewOptions | None = None) -> v2.Compose:
        """The standard training (random crop, flip) or evaluation (centre crop) transform;
        with ``strong``, the training one with FixMatch's RandAugment and Cutout."""
        mean, std = NORMALIZATION[self.normalize]
        if train:
            crop_step = [v2.RandomCrop(self.crop), v2.RandomHorizontalFlip()]
        else:
            crop_step = [v2.CenterCrop(self.crop)]
        return compose(
            v2.ToImage(), v2.Resize((self.resize, self.resize), antialias=True), *crop_step,
            None if strong is None else strong.randaugment(),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std),
            None if strong is None else strong.cutout_step(),
        )  # fmt: skip


class ImageList(Dataset):
    """``(path, label)`` samples, opened as RGB and transformed; ``targets`` holds the labels.
    ``recipe``, the benchmark's transforms, gives them FixMatch's views (``views``)."""

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        transform: Callable[[Image.Image], Any],
        recipe: ImageTransforms,
    ) -> None:
        self.samples, self.transform, self.recipe = samples, transform, recipe
        self.targets = [label for _, label in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(open_rgb(path)), label

    def views(self, options: ViewOptions) -> ImageViews:
        """FixMatch's views of these images (``dalib.data.views``): the weak one is the
        training transform (random crop, horizontal flip), the strong one adds RandAugment and
        Cutout; ``shift`` is the digits' and refused here."""
        if options.shift is not None:
            raise DalibError(
                "data.target_views shift is the digits' weak view; an image folder's weak view "
                "is its training transform (random crop, flip): remove shift"
            )
        return ImageViews(
            images=ImageList(self.samples, v2.Identity(), self.recipe),
            weak=self.recipe.transform(train=True),
            strong=self.recipe.transform(train=True, strong=options),
        )


def open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise DalibError(
            f"cannot read image {path} ({error}); replace the file, or set "
            "data.dataset.skip_corrupt: true to leave unreadable images out"
        ) from None


def readable(samples: list[tuple[Path, int]]) -> list[tuple[Path, int]]:
    """The samples whose image opens; each unreadable one is named in a warning."""
    kept = []
    for path, label in samples:
        try:
            with Image.open(path) as image:
                image.verify()
            kept.append((path, label))
        except (OSError, UnidentifiedImageError) as error:
            warnings.warn(f"dalib: skipping unreadable image {path} ({error})", stacklevel=2)
    return kept


def class_folders(domain_dir: Path) -> Path:
    """The folder that holds one sub-folder per class (Office-31 nests them in ``images/``)."""
    nested = domain_dir / "images"
    return nested if nested.is_dir() else domain_dir


def folder_samples(directory: Path, classes: list[str]) -> list[tuple[Path, int]]:
    samples = [
        (path, label)
        for label, name in enumerate(classes)
        for path in sorted((directory / name).rglob("*"))
        if path.suffix.lower() in IMG_EXTENSIONS
    ]
    if not samples:
        raise DalibError(f"no images found in the class folders of {directory}; check the layout")
    return samples


def shared_classes(source_dir: Path, target_dir: Path, benchmark: ImageBenchmark) -> list[str]:
    """The sorted class folder names, which must be the same in both domains."""
    found = {d: sorted(p.name for p in d.iterdir() if p.is_dir()) for d in (source_dir, target_dir)}
    for directory, classes in found.items():
        if not classes:
            raise DalibError(
                f"{directory} has no class folders; {benchmark.title} needs one folder of "
                "images per class in each domain"
            )
    if found[source_dir] != found[target_dir]:
        only_s = sorted(set(found[source_dir]) - set(found[target_dir]))
        only_t = sorted(set(found[target_dir]) - set(found[source_dir]))
        raise DalibError(
            f"classes differ between source and target: only in {source_dir}: {only_s[:5]}, "
            f"only in {target_dir}: {only_t[:5]}; both domains need the same class folders"
        )
    classes = found[source_dir]
    if len(classes) != benchmark.num_classes:
        raise DalibError(
            f"{source_dir} has {len(classes)} class folders, {benchmark.title} has "
            f"{benchmark.num_classes}; check that the data folder holds the whole benchmark"
        )
    return classes


def list_samples(list_file: Path, base: Path, num_classes: int) -> list[tuple[Path, int]]:
    """Samples from a file list of ``relative/path label`` lines, every file checked."""
    samples = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            relative, label = line.rsplit(maxsplit=1)
            label = int(label)
        except ValueError:
            raise DalibError(f"{list_file}:{number}: expected 'path label', got {line!r}") from None
        if not 0 <= label < num_classes:
            raise DalibError(f"{list_file}:{number}: label {label} is outside 0..{num_classes - 1}")
        samples.append((base / relative, label))
    missing = [path for path, _ in samples if not path.is_file()]
    if missing:
        raise DalibError(
            f"{list_file} names {len(missing)} missing file(s), the first {missing[0]}; "
            "check that the list and the data folder belong together"
        )
    if not samples:
        raise DalibError(f"{list_file} lists no images")
    return samples


def image_benchmark(
    name: str,
    source: str,
    target: str,
    root: str | None,
    file_lists: Mapping[str, str] | None,
    resize: int,
    crop: int,
    normalize: Literal["imagenet", "symmetric"],
    skip_corrupt: bool,
    download: bool,
) -> DomainPair:
    benchmark = BENCHMARKS[name]
    s, t = benchmark.domain(source), benchmark.domain(target)
    if download:
        for archive in ARCHIVES[name]:
            fetch(archive.url, archive.sha256, data_root(root) / benchmark.folder,
                  archive.filename, extracted=archive.extracts_to)  # fmt: skip
    base = require(
        data_root(root) / benchmark.folder, root,
        f"put {benchmark.title} there (one folder per domain), or set "
        "data.dataset.download: true to download it",
    )  # fmt: skip
    source_test_samples = source_test_origin = None
    if file_lists:
        unknown = set(file_lists) - {"source", "target", "source_test", "target_test"}
        if unknown or not {"source", "target"} <= set(file_lists):
            raise DalibError(
                "file_lists takes the keys source, target and optionally source_test, target_test"
            )
        lists = {k: require(base / v, root, "check file_lists") for k, v in file_lists.items()}
        samples = {k: list_samples(v, base, benchmark.num_classes) for k, v in lists.items()}
        source_origin = str(lists["source"])
        source_samples, target_samples = samples["source"], samples["target"]
        test_samples = samples.get("target_test", target_samples)
        if "source_test" in lists:
            source_test_samples = samples["source_test"]
            source_test_origin = f"source_test list {lists['source_test']}"
        if "target_test" in lists:
            target_test_origin = f"target_test list {lists['target_test']}"
        else:
            target_test_origin = f"target list {lists['target']} (the images adapted to)"
    else:
        source_dir = class_folders(require(base / benchmark.domains[s], root, "check the domain"))
        target_dir = class_folders(require(base / benchmark.domains[t], root, "check the domain"))
        source_origin = str(source_dir)
        classes = shared_classes(source_dir, target_dir, benchmark)
        source_samples = folder_samples(source_dir, classes)
        target_samples = test_samples = folder_samples(target_dir, classes)
        target_test_origin = f"target folder {target_dir} (the images adapted to)"
    if skip_corrupt:
        same = test_samples is target_samples
        source_samples, target_samples = readable(source_samples), readable(target_samples)
        test_samples = target_samples if same else readable(test_samples)
        if source_test_samples is not None:
            source_test_samples = readable(source_test_samples)
    recipe = ImageTransforms(resize, crop, normalize)
    train_tf, eval_tf = recipe.transform(train=True), recipe.transform(train=False)
    source_test = (
        None if source_test_samples is None else ImageList(source_test_samples, eval_tf, recipe)
    )
    return DomainPair(
        benchmark=name,
        task=f"{s}->{t}",
        source=ImageList(source_samples, train_tf, recipe),
        target_train=ImageList(target_samples, train_tf, recipe),
        target_test=ImageList(test_samples, eval_tf, recipe),
        num_classes=benchmark.num_classes,
        source_eval=ImageList(source_samples, eval_tf, recipe),
        target_eval=ImageList(target_samples, eval_tf, recipe),
        in_memory=False,
        source_origin=source_origin,
        source_test=source_test,
        source_test_origin=source_test_origin,
        target_test_origin=target_test_origin,
    )


def _register(name: str) -> None:
    benchmark = BENCHMARKS[name]
    first, second = list(benchmark.domains)[:2]

    def factory(
        source: str = first,
        target: str = second,
        root: str | None = None,
        file_lists: Mapping[str, str] | None = None,
        resize: int = 256,
        crop: int = 224,
        normalize: Literal["imagenet", "symmetric"] = "imagenet",
        skip_corrupt: bool = False,
        download: bool = False,
    ) -> DomainPair:
        return image_benchmark(
            name,
            source,
            target,
            root,
            file_lists,
            resize,
            crop,
            normalize,
            skip_corrupt,
            download,
        )

    domains = ", ".join(f"{k} ({v})" for k, v in benchmark.domains.items())
    factory.__doc__ = f"""{benchmark.title}, {benchmark.num_classes} classes: domains {domains}.

    Args:
        source: the labelled source domain, by short or folder name.
        target: the target domain adapted to (labels hidden in training).
        root: the data folder (default ``$DALIB_DATA``, else ``~/.cache/dalib``).
        file_lists: image lists instead of class folders, paths relative to the benchmark
            folder: ``source``, ``target`` and optionally ``target_test`` (what every target
            accuracy is measured on; default the target list) and ``source_test`` (the source
            validation set; default a hold-out of the source list).
        resize: the side images are resized to.
        crop: the side of the (random in training, centre in evaluation) crop.
        normalize: ``imagenet`` statistics, or ``symmetric`` ((p - 128) / 128).
        skip_corrupt: leave unreadable images out (each named in a warning) instead of stopping.
        download: fetch the benchmark's archives into the data folder first.
    """
    DATASETS.register(name)(factory)


for _name in BENCHMARKS:
    _register(_name)
