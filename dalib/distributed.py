"""Data-parallel training: discrepancies on the gathered batch, and samplers that shard domains.

Under DDP each process sees its own batch of each domain. A loss that is a mean over samples
(cross-entropy, an adversarial critic's loss) averages correctly through DDP's gradient
averaging, but a discrepancy between two *batches* (MMD, CORAL, optimal transport) computed on
each process's shard is a different, noisier estimator. ``gather_inputs`` all-gathers the inputs
of ``D`` with gradients, so every process computes ``D`` on the global batch.

Why the gradients come out right: every process computes the same value ``D(all)`` and adds
``γ·D(all)`` to its loss. The backward of the gather sums, over processes, the gradient each
one's loss sends to a process's own rows: ``W·∂D/∂f_r`` for ``W`` processes. DDP then averages
the parameter gradients over the ``W`` processes, which cancels the factor ``W`` and leaves
``Σ_r ∂D/∂f_r · ∂f_r/∂θ = ∂D(all)/∂θ``: the gradient of one process on the concatenated batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler
from torchmetrics.utilities.distributed import gather_all_tensors

from dalib.errors import DalibError

if TYPE_CHECKING:
    from dalib.discrepancy import Discrepancy

SEED_RANGE = 2**62  # the per-draw augmentation seeds are in [0, SEED_RANGE)


def world_size() -> int:
    """The number of processes training together; 1 outside distributed training."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over the processes training together, without gradient (``value``
    itself in one process)."""
    if world_size() == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world_size()


class GatherRows(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every process's gradient into each one's rows.

    Built on the public collectives only: ``all_gather`` forward, ``all_reduce`` (sum) of the
    gathered gradient and this process's slice backward, a reduce-scatter that every backend
    (gloo included) supports. torch's own autograd gathers are private
    (``_functional_collectives``) or deprecated (``torch.distributed.nn.functional``).
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rows = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` concatenated along dim 0 in rank order, with gradients.

    All processes must pass the same shape (the data module's training batches all have
    ``batch_size`` rows). The backward sums every process's gradient into each one's rows.
    """
    return GatherRows.apply(tensor)


def gather_inputs(
    measure: Discrepancy, inputs: Mapping[str, torch.Tensor | None]
) -> dict[str, torch.Tensor | None]:
    """The keyword arguments of ``measure`` with every tensor gathered (``None`` stays ``None``).

    Logits and source labels are gathered only for a measure that uses the classifier's outputs
    (``needs_logits``); for the others they become ``None`` rather than cost more collectives.
    """
    unused = () if measure.needs_logits else ("logits_s", "logits_t", "y_s")
    return {name: None if t is None or name in unused else gather(t) for name, t in inputs.items()}


def gather_evaluation(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's rows of ``tensor`` (their numbers may differ), concatenated; no gradient.

    For statistics over a whole evaluation set that each process holds a share of. NCCL gathers
    on the process's GPU; the result is on ``tensor``'s device.
    """
    if world_size() == 1:
        return tensor
    nccl = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else tensor.device
    return torch.cat([t.to(tensor.device) for t in gather_all_tensors(tensor.to(device))])


def global_seed() -> int:
    """The seed all processes share: ``seed_everything``'s, as Lightning's own samplers use it."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class ShardedRandomSampler(DistributedSampler):
    """One process's share of a random training stream that all processes draw alike.

    Each epoch every process draws the same stream of ``num_replicas × steps × batch_size``
    indices from a generator seeded by ``(seed, epoch)``: permutations of the dataset one after
    another (each sample once per pass, as ``RandomSampler`` draws), or, with ``weights``, draws
    with replacement in proportion to them. Global step ``k`` takes the stream's ``k``-th run of
    ``num_replicas × batch_size`` indices and process ``r`` its ``r``-th block of
    ``batch_size``: within a pass no two processes draw the same sample, and together they take
    the batch that one process reading the stream would take at ``num_replicas × batch_size``.

    With ``draw_seeds``, each index comes with a seed for its augmentation, ``(index, seed)``
    (``dalib.data.views``), drawn from the same generator: one per position of the stream, so
    no two draws on any process share one.

    It is a ``DistributedSampler`` so that Lightning keeps it instead of substituting its own.
    """

    def __init__(
        self,
        dataset: Dataset,
        steps: int,
        batch_size: int,
        num_replicas: int,
        rank: int,
        seed: int,
        weights: torch.Tensor | None = None,
        draw_seeds: bool = False,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, seed=seed)
        self.num_samples = steps * batch_size
        self.total_size = self.num_samples * num_replicas
        self.batch_size = batch_size
        self.weights = weights
        self.draw_seeds = draw_seeds

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(hash((self.seed, self.epoch)) % 2**63)
        if self.weights is not None:
            stream = torch.multinomial(
                self.weights, self.total_size, replacement=True, generator=generator
            )
        else:
            n = len(self.dataset)
            passes = -(-self.total_size // n)
            stream = torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])
        indices = self.share(stream[: self.total_size])
        if not self.draw_seeds:
            return iter(indices)
        seeds = torch.randint(SEED_RANGE, (self.total_size,), generator=generator)
        return zip(indices, self.share(seeds), strict=True)

    def share(self, stream: torch.Tensor) -> list[int]:
        """This process's blocks of ``batch_size`` of a stream of ``total_size`` numbers."""
        blocks = stream.view(-1, self.num_replicas, self.batch_size)
        return blocks[:, self.rank].flatten().tolist()


class EvaluationSampler(DistributedSampler):
    """Process ``rank``'s share of an evaluation set, in order: samples ``rank``,
    ``rank + num_replicas``, ... Every sample is evaluated on exactly one process; the shares
    differ by at most one sample (torch's ``DistributedSampler`` instead pads the last share with
    repeated samples, which would count them twice in an accuracy).

    Evaluation runs no DDP forward, so processes may run different numbers of batches; every
    process holds at least one sample (``evaluation_sampler`` checks). It is a
    ``DistributedSampler`` so that Lightning keeps it instead of substituting its own.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))


def evaluation_sampler(
    dataset: Dataset, name: str, num_replicas: int, rank: int
) -> EvaluationSampler:
    """Every sample on exactly one process, no padding (Lightning's own pads with duplicates)."""
    if len(dataset) < num_replicas:
        raise DalibError(
            f"the {name} set has {len(dataset)} samples, fewer than the {num_replicas} "
            "processes; evaluate on fewer devices"
        )
    return EvaluationSampler(dataset, num_replicas=num_replicas, rank=rank)
