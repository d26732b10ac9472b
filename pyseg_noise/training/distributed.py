"""Data parallelism with ``torch.distributed`` (DDP semantics, launched by ``torchrun``).

``torchrun --nproc_per_node=G [--nnodes=N ...] -m pyseg_noise train ...`` sets
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; :func:`init_distributed` then joins the
process group (NCCL on GPUs, gloo on CPU). Each process takes its slice of the
global batch (:mod:`pyseg_noise.training.batch_stream`); after backward,
:func:`average_gradients` all-reduces the gradients of every trainable network,
which is what ``DistributedDataParallel`` computes. The gradients are averaged
explicitly (one flat all-reduce per dtype) rather than through DDP's wrapper
because a method may hold several networks, or differentiate through more than
one forward pass (meta re-weighting), which the wrapper's hooks do not cover;
the cost is that communication does not overlap the backward pass.
Parameters and buffers are broadcast from rank 0 once at the start.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "DistInfo",
    "init_distributed",
    "average_gradients",
    "broadcast_state",
    "all_reduce_mean",
    "all_gather_objects",
    "any_rank",
    "barrier",
]


@dataclass
class DistInfo:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(use_cuda: bool) -> DistInfo:
    """Join the process group described by torchrun's environment (no-op for one process).

    Args:
        use_cuda: the run trains on GPUs (NCCL backend, one GPU per local rank).
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    atexit.register(_destroy)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, True)


def _destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def average_gradients(params: Sequence[nn.Parameter]) -> None:
    """Replace each gradient by its mean over the processes (DDP's all-reduce).

    A parameter that received no gradient on any process keeps ``grad = None`` (so
    the optimizer skips it, as in one process); one that received a gradient on
    some processes only gets zeros from the others.
    """
    if not _active() or not params:
        return
    world = dist.get_world_size()
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    chosen = [p for p, h in zip(params, has.tolist()) if h]
    by_dtype: Dict[torch.dtype, List[nn.Parameter]] = {}
    for p in chosen:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        by_dtype.setdefault(p.grad.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= world
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n


def broadcast_state(modules: Iterable[nn.Module], src: int = 0) -> None:
    """Copy every parameter and buffer of ``modules`` from rank ``src`` to all processes."""
    if not _active():
        return
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=src)


def broadcast_buffers(modules: Iterable[nn.Module], src: int = 0) -> None:
    """Copy every buffer of ``modules`` (batch-norm statistics and counters) from rank ``src``
    to all processes, as DDP's ``broadcast_buffers`` does: one collective per dtype, on the
    buffers flattened into one tensor. Parameters are not touched (their gradients are averaged)."""
    if not _active():
        return
    by_dtype: Dict[torch.dtype, List[Tensor]] = {}
    for module in modules:
        for b in module.buffers():
            by_dtype.setdefault(b.dtype, []).append(b)
    for group in by_dtype.values():
        flat = torch.cat([b.detach().reshape(-1) for b in group])
        dist.broadcast(flat, src=src)
        offset = 0
        for b in group:
            n = b.numel()
            b.detach().copy_(flat[offset:offset + n].view_as(b))
            offset += n


def all_reduce_max(values: Tensor) -> Tensor:
    """Element-wise maximum over processes (returned; the input is not modified)."""
    if not _active():
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def all_reduce_mean(values: Tensor) -> Tensor:
    """Mean over processes of a float tensor (returned; the input is not modified)."""
    if not _active():
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def any_rank(flag: bool, device: Optional[torch.device] = None) -> bool:
    """True if ``flag`` is true on any process (e.g. one of them caught Ctrl-C)."""
    if not _active():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` for one process)."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if _active():
        dist.barrier()
