"""Wall time of the parts of a training step, for the training benchmark.

The Trainer and the methods mark their parts (``with part("teacher_passes"): ...``);
nothing is measured unless :func:`record_parts` is active, so a marked part costs one
attribute read in normal training::

    with record_parts() as seconds:
        run some steps
    seconds   # {"train_step": ..., "teacher_passes": ..., "backward": ..., ...}

Parts may nest (``teacher_passes`` and ``loss`` lie inside ``train_step``); the benchmark
subtracts the inner ones. With ``sync_cuda=True`` each boundary waits for the GPU, so the
times are the GPU's (that adds host syncs: benchmark use only).
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Dict, Iterator, Optional

import torch

__all__ = ["part", "record_parts"]

_seconds: Optional[Dict[str, float]] = None
_sync_cuda = False


class part:
    """Context manager adding its wall time to ``name`` while :func:`record_parts` is active."""

    __slots__ = ("name", "_start")

    def __init__(self, name: str):
        self.name = name
        self._start = 0.0

    def __enter__(self) -> "part":
        if _seconds is not None:
            if _sync_cuda:
                torch.cuda.synchronize()
            self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> bool:
        if _seconds is not None:
            if _sync_cuda:
                torch.cuda.synchronize()
            _seconds[self.name] += time.perf_counter() - self._start
        return False


@contextlib.contextmanager
def record_parts(*, sync_cuda: bool = False) -> Iterator[Dict[str, float]]:
    """Collect the seconds of every :class:`part` entered inside, by name (not re-entrant)."""
    global _seconds, _sync_cuda
    if _seconds is not None:
        raise RuntimeError("record_parts is already active")
    _seconds, _sync_cuda = defaultdict(float), sync_cuda
    try:
        yield _seconds
    finally:
        _seconds, _sync_cuda = None, False
