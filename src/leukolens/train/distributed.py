"""Training on several processes with DistributedDataParallel (gloo on CPU): what the cell-model and detector
trainers share.

    torchrun --standalone --nproc_per_node=2 -m leukolens train cells --data ../shared/data/pbc --out out/cells

One process is the plain path: :func:`setup` returns :data:`SINGLE` and every helper here then does nothing but
return its input, so a run without torchrun is the run it always was. Under torchrun (``WORLD_SIZE`` > 1):

- the global batch stays the configured one: every rank draws the same epoch order (same seed) and takes its own
  contiguous part of each global batch (:meth:`Ranks.batches`), ``batch_size / world_size`` samples; DDP averages
  the gradients, so a step follows the gradient of the whole batch's mean loss, as one process would. What still
  differs is noise: each rank augments its part with its own random stream, and batch-norm statistics are taken over
  a rank's part (SyncBatchNorm needs a GPU);
- each rank runs ``cores // world_size`` torch threads (at least one), so N processes use the cores one did;
- rank 0 alone validates, logs and writes checkpoints; the others wait for its decisions (:func:`broadcast`): the
  schedule's horizon, whether to stop. A time budget is checked at every step on every rank and the run stops when
  it has passed on any (:func:`any_rank`), so that all ranks stop at the same step;
- the epoch's mean losses are averaged over the ranks (:func:`mean_over_ranks`) before rank 0 logs them.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from leukolens.errors import LeukolensError

T = TypeVar("T")
TIMEOUT = datetime.timedelta(hours=2)
"""How long a rank waits for the others at a collective: rank 0's validation pass runs meanwhile."""


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes.

    Attributes:
        rank: 0 for the process that validates, logs and writes.
        world_size: the number of processes.
        owned: :func:`setup` started the process group, so :func:`cleanup` ends it.
    """

    rank: int = 0
    world_size: int = 1
    owned: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def log(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """``log`` on the first process, a no-op on the others (one log for the run)."""
        return log if self.is_main else _quiet

    def per_rank(self, batch_size: int) -> int:
        """Each rank's part of a global batch.

        Raises:
            LeukolensError: the batch does not divide evenly among the processes.
        """
        if batch_size % self.world_size:
            raise LeukolensError(
                f"a batch of {batch_size} does not divide among {self.world_size} processes: give a --batch-size "
                f"that is a multiple of {self.world_size}"
            )
        return batch_size // self.world_size

    def seed(self, seed: int) -> int:
        """A seed for this rank's own random stream (augmentation): ``seed`` itself on rank 0 and in one process."""
        return seed + 1_000_003 * self.rank

    def batches(self, order: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        """This rank's indices of each full global batch of ``order`` (an epoch's order, the same on every rank);
        in one process, the global batches themselves (a last partial batch is dropped)."""
        part = self.per_rank(batch_size)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield order[start + self.rank * part : start + (self.rank + 1) * part]


SINGLE = Ranks()
"""One process: the plain path."""


def setup(*, threads: int = 0, backend: str = "gloo") -> Ranks:
    """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and
    set this rank's torch threads (``threads``, else ``cores // world_size``); :data:`SINGLE` without torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend, timeout=TIMEOUT)
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // world_size))
    return Ranks(dist.get_rank(), dist.get_world_size(), owned)


def cleanup(ranks: Ranks) -> None:
    """End the process group if :func:`setup` started it."""
    if ranks.owned and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """Rank 0, or the only process (also after the group has ended: torchrun's ``RANK``)."""
    return dist.get_rank() == 0 if _active() else int(os.environ.get("RANK", "0")) == 0


def wrap(model: nn.Module, ranks: Ranks, *, unused_parameters: bool = False) -> nn.Module:
    """``model`` in DistributedDataParallel under several processes (its weights made rank 0's), else itself.

    Args:
        unused_parameters: some trainable weights take no part in a step (the detector at stride 8 never reads its
            stride-4 lateral): DDP then walks the graph after each forward pass to find them.
    """
    if not ranks.distributed:
        return model
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (its config, its state dict), or ``model`` itself."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@contextmanager
def all_cores(ranks: Ranks):
    """Rank 0 on every core for the block (its validation pass, while the other ranks wait), then back to its
    share; nothing in one process."""
    if not ranks.distributed:
        yield
        return
    share = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or share)
    try:
        yield
    finally:
        torch.set_num_threads(share)


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any: one decision that all ranks take at the same step."""
    if not _active():
        return flag
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks (the same names on every rank)."""
    if not _active() or not values:
        return values
    names = sorted(values)
    stacked = torch.tensor([float(values[n]) for n in names], dtype=torch.float64)
    dist.all_reduce(stacked)
    return {n: float(v) / dist.get_world_size() for n, v in zip(names, stacked.tolist())}


def broadcast(value: T) -> T:
    """Rank 0's ``value`` on every rank (any picklable value; the other ranks' argument is ignored)."""
    if not _active():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    if _active():
        dist.barrier()


@contextmanager
def main_first():
    """Rank 0 runs the block first (filling a cache on disk, say), then the others: no two write one file."""
    if is_main_process():
        yield
        barrier()
    else:
        barrier()
        yield


def _quiet(_: str) -> None:
    """The log of every training process but the first."""
