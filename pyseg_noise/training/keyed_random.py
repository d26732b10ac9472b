"""Random numbers keyed by (seed, sample, stream) instead of drawn from a global generator.

PINT perturbs every input with Gaussian noise before each teacher pass. If that
noise came from the global generator, a batch of 4 on one process and two
batches of 2 on two processes would draw different numbers, and a resumed run
would need the generator's exact position. Drawing each sample's noise from a
generator seeded by ``(seed, global sample position, stream)`` makes the noise a
pure function of the data stream: the same whatever the number of processes,
and the same after a resume.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["sample_key", "keyed_normal", "PROCESS_STREAM"]

#: the stream that seeds a process's global generators (dropout masks); sample streams are small ints
PROCESS_STREAM = 2**32 - 1


def sample_key(seed: int, position: int, stream: int) -> int:
    """A 63-bit generator seed for one (seed, sample position, stream) triple of non-negative ints."""
    words = np.random.SeedSequence([int(seed), int(position), int(stream)]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def keyed_normal(
    positions: Sequence[int],
    sample_shape: Sequence[int],
    *,
    seed: int,
    stream: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise, one independent draw per sample, keyed by its stream position.

    Args:
        positions: global stream positions of the batch's samples (``Batch.positions``).
        sample_shape: shape of one sample, e.g. ``(C, X, Y, Z)``.
        seed: the run's seed.
        stream: which draw for these samples (e.g. the teacher pass ``m``).
        device, dtype: of the result.

    Returns:
        Tensor[len(positions), *sample_shape].

    Example:
        >>> a = keyed_normal([0, 1, 2, 3], (1, 4, 4, 4), seed=0, stream=0)
        >>> b = keyed_normal([2, 3], (1, 4, 4, 4), seed=0, stream=0)
        >>> torch.equal(a[2:], b)
        True
    """
    device = torch.device(device)
    out = torch.empty((len(positions), *sample_shape), device=device, dtype=dtype)
    gen = torch.Generator(device=device)
    for i, p in enumerate(positions):
        gen.manual_seed(sample_key(seed, int(p), stream))
        torch.randn(tuple(sample_shape), generator=gen, device=device, dtype=dtype, out=out[i])
    return out
