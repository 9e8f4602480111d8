"""A weak and a strong augmentation of each target training image, for FixMatch.

FixMatch (Sohn et al., NeurIPS 2020, section 2.3) pseudo-labels a *weak* view α(x) of an
unlabelled image and trains on a *strong* view A(x) of the same image. With
``data.target_views`` the data module delivers each target training sample as
``(weak, label, strong)``, two independent augmentations of one image (``TwoViews``):

- weak: the digits shift by up to ``shift`` of their side (default 0.125), a reflect-padded
  random crop as the reference's ``augment_shift`` (google-research/fixmatch
  libml/augment.py:69-71: 4 pixels of 32, without flip for SVHN, line 351); an image folder's
  weak view is its training transform (random crop, horizontal flip).
- strong: the weak view's augmentation, then torchvision's RandAugment (``ops`` of its 14
  operations, at a level of 10 drawn per sample from 1..9 unless ``magnitude`` fixes it: the
  reference's RandAugment variant draws ``randint(1, 10)`` for each operation and applies each
  with probability 0.5, libml/augment.py:209-223 and 245-246, where torchvision applies every
  drawn operation at one level), then Cutout: a square of ``cutout`` times the side set to 0,
  mid-grey for the digits' [-1, 1] and the mean colour after ImageNet normalisation, as the
  reference's ``cutout_numpy`` (third_party/auto_augment/augmentations.py:102-121, a 16-pixel
  square on 32 ones in [-1, 1]). Here it is ``RandomErasing``, whose square lies inside the
  image; the reference's centre may lie anywhere and its square is clipped at the border.

Randomness: every draw of a sample comes with its own seed (``DrawSeeds``; under DDP the
sharded sampler's stream), and its two views are drawn from that seed alone (torch's generator
forked and reseeded per sample). The views therefore depend only on the sampler, which a resumed
run replays, not on which process makes them (loader workers have generators of their own, and
DDP processes share one seed), and the global generator (dropout, the next epoch's order) is
left as it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler, Subset
from torchvision.transforms import v2

from dalib.data.batched import read_items
from dalib.distributed import SEED_RANGE
from dalib.errors import DalibError

LEVELS = 10  # RandAugment's levels: the reference's PARAMETER_MAX (augmentations.py:35)
Transform = Callable[[Any], torch.Tensor]


@dataclass(frozen=True)
class ViewOptions:
    """The options of ``data.target_views``.

    Args:
        shift: the digits' weak view: a random shift by up to this fraction of the side
            (default 0.125, FixMatch's 4 pixels of 32); image folders refuse it (their weak
            view is their training crop and flip).
        ops: RandAugment operations in the strong view (FixMatch's 2); 0 for none.
        magnitude: RandAugment's level in 0..10; ``None`` draws it per sample from 1..9, as
            the reference does.
        cutout: the side of the Cutout square as a fraction of the image side (FixMatch's
            0.5), below 1; 0 for none.
    """

    shift: float | None = None
    ops: int = 2
    magnitude: int | None = None
    cutout: float = 0.5

    def __post_init__(self) -> None:
        if self.shift is not None and not 0 <= self.shift < 0.5:
            raise DalibError(f"data.target_views shift must be in [0, 0.5), got {self.shift}")
        if self.ops < 0:
            raise DalibError(f"data.target_views ops must be >= 0, got {self.ops}")
        if self.magnitude is not None and not 0 <= self.magnitude <= LEVELS:
            raise DalibError(
                f"data.target_views magnitude must be in 0..{LEVELS} or null (drawn per "
                f"sample), got {self.magnitude}"
            )
        if not 0 <= self.cutout < 1:
            raise DalibError(f"data.target_views cutout must be in [0, 1), got {self.cutout}")

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> ViewOptions:
        """The options of a config's ``target_views`` mapping, unknown keys refused."""
        known = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(spec) - set(known))
        if unknown:
            raise DalibError(
                f"data.target_views takes {', '.join(known)}; got unknown {', '.join(unknown)}"
            )
        return cls(**spec)

    def randaugment(self) -> Transform | None:
        """RandAugment at a fixed or a per-sample random level; ``None`` with ``ops`` 0."""
        if self.ops == 0:
            return None
        if self.magnitude is not None:
            return v2.RandAugment(self.ops, self.magnitude, num_magnitude_bins=LEVELS + 1)
        levels = range(1, LEVELS)
        return v2.RandomChoice(
            [v2.RandAugment(self.ops, level, num_magnitude_bins=LEVELS + 1) for level in levels]
        )

    def cutout_step(self) -> Transform | None:
        """Cutout on a float image: a square of ``cutout`` times the side, set to 0."""
        if self.cutout == 0:
            return None
        area = self.cutout**2
        return v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0.0)


def compose(*steps: Transform | None) -> v2.Compose:
    """The steps that are not ``None``, in order."""
    return v2.Compose([step for step in steps if step is not None])


@dataclass(frozen=True)
class ImageViews:
    """What a dataset offers for two views: its ``images`` (``(raw image, label)``, indexed as
    the dataset) and the ``weak`` and ``strong`` transforms of a raw image."""

    images: Dataset
    weak: Transform
    strong: Transform


def image_views(dataset: Dataset, options: ViewOptions) -> ImageViews | None:
    """The two views of ``dataset``'s samples, or ``None`` where they are not images (feature
    vectors, toy points): a dataset offers them by a ``views(options)`` method; a ``Subset``
    offers those of its dataset at its indices."""
    if isinstance(dataset, Subset):
        inner = image_views(dataset.dataset, options)
        if inner is None:
            return None
        return dataclasses.replace(inner, images=Subset(inner.images, dataset.indices))
    views = getattr(dataset, "views", None)
    return views(options) if callable(views) else None


class TwoViews(Dataset):
    """``(weak, label, strong)`` for each ``(index, seed)`` draw: two independent augmentations
    of ``images[index]``, both drawn from ``seed`` alone (see the module's docstring)."""

    def __init__(self, images: Dataset, weak: Transform, strong: Transform) -> None:
        self.images, self.weak, self.strong = images, weak, strong

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, draw: tuple[int, int]) -> tuple[torch.Tensor, Any, torch.Tensor]:
        return self.__getitems__([draw])[0]

    def __getitems__(
        self, draws: list[tuple[int, int]]
    ) -> list[tuple[torch.Tensor, Any, torch.Tensor]]:
        samples = read_items(self.images, [index for index, _ in draws])
        views = []
        with torch.random.fork_rng(devices=[]):
            for (image, label), (_, seed) in zip(samples, draws, strict=True):
                torch.default_generator.manual_seed(seed)
                views.append((self.weak(image), label, self.strong(image)))
        return views


class DrawSeeds(Sampler[tuple[int, int]]):
    """``(index, seed)`` for each index of ``sampler``: a fresh seed per draw, from a generator
    seeded once per iteration from torch's global one, as the iteration starts (where
    ``RandomSampler`` draws its order, so ``ResumableSampler`` replays both)."""

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(int(torch.randint(SEED_RANGE, ())))
        for index in self.sampler:
            yield index, int(torch.randint(SEED_RANGE, (), generator=generator))
