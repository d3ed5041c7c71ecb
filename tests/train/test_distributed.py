"""Training on two processes (DDP, gloo on CPU): the same weights as one process on the same global batches, one
stop decision for all ranks, and rank 0 alone writing and logging."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from leukolens.errors import LeukolensError
from leukolens.train.distributed import (
    SINGLE,
    Ranks,
    any_rank,
    broadcast,
    cleanup,
    mean_over_ranks,
    setup,
    unwrap,
    wrap,
)
from leukolens.train.loop import optimisation_step

BATCH, EPOCHS, STOP_AT = 8, 3, 10  # 64 samples: 8 steps an epoch; the last rank alone asks to stop at 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    rng = np.random.default_rng(0)
    inputs = torch.from_numpy(rng.normal(size=(64, 6)).astype(np.float32))
    return inputs, torch.from_numpy(rng.integers(0, 3, 64))


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(6, 16), nn.Linear(16, 3)
        self.unused = nn.Linear(3, 3)  # trainable but in no step, as the detector's stride-4 lateral at stride 8

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)))


def _train(ranks: Ranks) -> tuple[nn.Module, int, list[float]]:
    """A tiny classifier trained as the trainers train: same-seed epoch order, this rank's part of each global batch,
    DDP, one optimisation step per batch, a stop that one rank may ask for, losses averaged over ranks."""
    torch.manual_seed(0)
    model = _Tiny()
    trained = wrap(model, ranks, unused_parameters=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    inputs, labels = _data()
    rng = np.random.default_rng(0)
    step, epoch_losses = 0, []
    for _ in range(EPOCHS):
        total, count = 0.0, 0
        for index in ranks.batches(rng.permutation(len(inputs)), BATCH):
            loss = F.cross_entropy(trained(inputs[index]), labels[index])
            optimisation_step(optimizer, scheduler, loss, parameters=trained.parameters(), max_norm=1.0)
            total, count, step = total + loss.item(), count + 1, step + 1
            if any_rank(step == STOP_AT and ranks.rank == ranks.world_size - 1):  # the last rank, or the only one
                break
        epoch_losses.append(mean_over_ranks({"total": total / count})["total"])
        if step == STOP_AT:
            break
    return unwrap(model), step, epoch_losses


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    ranks = setup()
    try:
        model, steps, losses = _train(ranks)
        decision = broadcast({"stop": rank == 0})  # rank 0's value reaches every rank
        torch.save({"state": model.state_dict(), "steps": steps, "losses": losses, "threads": torch.get_num_threads(),
                    "decision": decision, "ranks": ranks}, Path(out) / f"rank{rank}.pt")
    finally:
        cleanup(ranks)


def test_two_processes_reach_the_weights_of_one_on_the_same_global_batches(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single, steps, losses = _train(SINGLE)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for result in results:
        assert result["steps"] == steps == STOP_AT  # rank 1's stop, taken by both at the same step
        assert result["decision"] == {"stop": True}
        assert result["ranks"].world_size == 2 and result["threads"] == max(1, (os.cpu_count() or 1) // 2)
        for name, value in single.state_dict().items():
            torch.testing.assert_close(result["state"][name], value, rtol=1e-5, atol=1e-6, msg=name)
        # the epoch means over ranks are the means of the global batches, up to float rounding
        np.testing.assert_allclose(result["losses"], losses, rtol=1e-5)
    assert [r["ranks"].rank for r in results] == [0, 1]


def test_a_batch_that_does_not_divide_among_the_processes_is_refused():
    ranks = Ranks(rank=1, world_size=3)
    with pytest.raises(LeukolensError, match="a batch of 8 does not divide among 3 processes"):
        list(ranks.batches(np.arange(24), 8))
    assert [b.tolist() for b in Ranks(1, 2).batches(np.arange(10), 4)] == [[2, 3], [6, 7]]  # last partial dropped
    assert [b.tolist() for b in SINGLE.batches(np.arange(10), 4)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert SINGLE.seed(5) == Ranks(0, 2).seed(5) == 5 and Ranks(1, 2).seed(5) != 5


def _tiny_cells(folder: Path) -> Path:
    """The seven bundled PBC cells, each in train and val (a loop test, not a learning test)."""
    import copy

    from leukolens.cli.demo import sample_path
    from leukolens.io import read_dataset, write_dataset

    dataset = read_dataset(sample_path("pbc"))
    val = copy.deepcopy(dataset)
    for f in dataset.fields:
        f.split = "train"
    for f in val.fields:
        f.split = "val"
    dataset.fields += val.fields
    write_dataset(dataset, folder / "cells.json", format="coco")
    return folder / "cells.json"


def test_the_cell_trainer_under_torchrun_writes_and_logs_once(tmp_path):
    """``torchrun --nproc_per_node=2 -m leukolens train cells`` on the seven bundled cells (one step of 2 + 2):
    rank 0 alone logs, writes both checkpoints and fits the atypicality scorer."""
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "leukolens", "train", "cells",
               "--data", str(_tiny_cells(tmp_path)), "--out", "out", "--input-size", "64", "--epochs", "1",
               "--batch-size", "4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # the crop cache goes below tmp_path too
    assert done.returncode == 0, done.stderr[-3000:]
    for line in ("epoch 1/1", "best checkpoint: out/best.pt", "atypicality (knn on embedding)"):
        assert done.stdout.count(line) == 1, done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["best.pt", "last.pt"]
