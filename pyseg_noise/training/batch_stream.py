"""The training data stream: which crops every iteration sees, as a pure function of (seed, iteration).

The stream is the concatenation of epochs; epoch ``e`` visits the ``N`` cases in
the order ``default_rng([seed, e, N]).permutation(N)``. Position ``p`` of the
stream is case ``perm_e[p % N]`` of epoch ``e = p // N``, cropped and flipped
with the dataset's generator for ``(seed, e, index)``
(:class:`pyseg_noise.data.VolumeDataset`). Iteration ``t`` of a run with global
batch ``B`` takes positions ``t*B ... t*B + B - 1``; in a run of ``W`` processes,
process ``r`` takes the ``r``-th slice of ``B / W`` of them.

Consequences, all tested:

* a resumed run sees exactly the batches an uninterrupted one would — the only
  sampler state is the iteration;
* ``W`` processes with ``B / W`` samples each see exactly the samples of one
  process with ``B`` (the DDP equivalence);
* the number of DataLoader workers changes nothing.
"""
from __future__ import annotations

import signal
from typing import Dict, Iterator, List

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["StreamDataset", "ShardedBatchSampler", "stream_loader"]


class StreamDataset(Dataset):
    """Indexes a :class:`~pyseg_noise.data.VolumeDataset` by stream position.

    Items are the base dataset's dicts plus ``"position"`` (int).

    Args:
        base: a dataset with ``set_epoch`` and a fixed ``seed`` (its crops then depend
            only on the epoch and the index).
        seed: the permutation seed (the run's seed).
    """

    def __init__(self, base, seed: int):
        if getattr(base, "seed", 0) is None:
            raise ValueError("the training dataset needs a fixed seed for a reproducible stream (seed=None given)")
        self.base = base
        self.seed = int(seed)
        self.n = len(base)
        self._perms: Dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        """Case order of ``epoch``."""
        if epoch not in self._perms:
            if len(self._perms) > 8:  # only the current epoch or two are ever needed
                self._perms.clear()
            self._perms[epoch] = np.random.default_rng([self.seed, int(epoch), self.n]).permutation(self.n)
        return self._perms[epoch]

    def locate(self, position: int) -> tuple:
        """``(epoch, case index)`` of stream ``position``."""
        epoch, k = divmod(int(position), self.n)
        return epoch, int(self.permutation(epoch)[k])

    def __len__(self) -> int:  # the stream is endless; this is one epoch
        return self.n

    def __getitem__(self, position: int):
        epoch, index = self.locate(position)
        self.base.set_epoch(epoch)
        item = dict(self.base[index])
        item["position"] = int(position)
        return item


class ShardedBatchSampler(Sampler[List[int]]):
    """Yields, for iterations ``start .. stop - 1``, this process's stream positions.

    Args:
        global_batch: ``B``, samples per iteration over all processes.
        rank, world_size: this process and the number of processes (``B % W == 0``).
        start, stop: iteration range.

    Example:
        >>> list(ShardedBatchSampler(4, rank=1, world_size=2, start=0, stop=2))
        [[2, 3], [6, 7]]
    """

    def __init__(self, global_batch: int, *, rank: int = 0, world_size: int = 1, start: int = 0, stop: int):
        if global_batch % world_size:
            raise ValueError(f"batch_size {global_batch} must be divisible by the number of processes {world_size}")
        self.global_batch = int(global_batch)
        self.local = self.global_batch // world_size
        self.rank = int(rank)
        self.start = int(start)
        self.stop = int(stop)

    def __iter__(self) -> Iterator[List[int]]:
        for t in range(self.start, self.stop):
            first = t * self.global_batch + self.rank * self.local
            yield list(range(first, first + self.local))

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


def _ignore_sigint(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the main process saves a checkpoint
    # and stops the workers itself, so they must not die first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stream_loader(
    dataset: StreamDataset, global_batch: int, *, rank: int, world_size: int, start: int, stop: int,
    num_workers: int = 0, pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over iterations ``start .. stop - 1`` of the stream (batched dicts, ``"position"`` a tensor)."""
    sampler = ShardedBatchSampler(global_batch, rank=rank, world_size=world_size, start=start, stop=stop)
    # A DataLoader draws a base seed when it starts iterating; from the global generator that
    # draw would shift the dropout masks of a resumed run. Its own generator keeps it out.
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_ignore_sigint if num_workers else None,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(dataset.seed),
    )
