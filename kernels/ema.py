"""Triton kernel of the mean teacher's EMA (SPEC 7): ``ema <- decay * ema + (1 - decay) * tensor``.

Design: a multi-tensor apply. The lists are grouped by (ema dtype, tensor
dtype, 16-byte alignment); each group is ONE launch over a table of pointers,
whatever the number of tensors:

- ``table`` (int64 ``[n, 4]``): ema address, tensor address, numel, first program;
- ``owner`` (int32 ``[n_programs]``): which tensor each program updates.

Program ``p`` updates elements ``[(p - first) * BLOCK, ... + BLOCK)`` of tensor
``owner[p]`` through its flat memory: without a mask when the block is full
(every block but a tensor's last), so nothing in that path depends on the
``numel`` read from the table and the compiler emits 16-byte vector accesses
for aligned groups (``ld.global.v4``, checked in the PTX by
``tests/kernels/gpu_compile.py``); only the tail block is masked. The tables depend only on the
tensors' addresses, sizes and dtypes, so they are built once and cached on
the device (keyed by exactly those); a training loop whose parameters stay
in place pays no host-to-device copy after the first step. ``decay`` is a
0-d tensor the kernel loads, so a changing value (warm-up schedules)
recompiles nothing and needs no host synchronisation.

Tensors whose memory is dense (contiguous, or a permutation of it) are
updated where they lie. A non-dense ``ema`` (a strided view) is updated
through a contiguous copy that is written back; a ``tensor`` whose layout
differs from its ``ema`` is first copied into the ``ema``'s layout. Neither
happens for module parameters.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
import triton
import triton.language as tl

from .launch import acc_dtype, check_device, portable_dtype

__all__ = ["ema_update_"]

_BLOCK = 4096  # elements per program: 16 per thread at 8 warps
_CACHE_SIZE = 16
_TABLES: "OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]]" = OrderedDict()

_TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16,
              torch.float64: tl.float64}


@triton.jit
def _lerp(e, x, decay, EMA_DTYPE: tl.constexpr, ACC: tl.constexpr):
    # the tensor is rounded to the ema's dtype first, as ema.add_(tensor.to(ema.dtype) * (1 - d))
    e = e.to(ACC)
    x = x.to(EMA_DTYPE).to(ACC)
    return (decay * e + (1 - decay) * x).to(EMA_DTYPE)


@triton.jit
def ema_update_kernel(
    table_ptr,  # [n_tensors, 4] int64: ema address, tensor address, numel, first program
    owner_ptr,  # [n_programs] int32: tensor index of each program
    decay_ptr,  # [] decay, any float dtype
    EMA_DTYPE: tl.constexpr,  # element type of the ema tensors of this group
    SRC_DTYPE: tl.constexpr,  # element type of the source tensors of this group
    ALIGNED: tl.constexpr,  # every address of the group is 16-byte aligned: vector loads
    ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    row = table_ptr + tl.load(owner_ptr + pid).to(tl.int64) * 4
    ema = tl.load(row).to(tl.pointer_type(EMA_DTYPE))
    src = tl.load(row + 1).to(tl.pointer_type(SRC_DTYPE))
    numel = tl.load(row + 2)
    first = tl.load(row + 3)
    if ALIGNED:
        ema = tl.multiple_of(ema, 16)
        src = tl.multiple_of(src, 16)
    # start is a multiple of BLOCK, so each block starts as aligned as the tensor
    start = (pid - first).to(tl.int64) * BLOCK
    ema += start
    src += start
    offs = tl.arange(0, BLOCK)
    decay = tl.load(decay_ptr).to(ACC)
    if start + BLOCK <= numel:
        # every block but a tensor's last: no mask, so the loads and stores are full vectors
        tl.store(ema + offs, _lerp(tl.load(ema + offs), tl.load(src + offs), decay, EMA_DTYPE, ACC))
    else:
        # the tail: one masked block per tensor
        mask = offs < numel - start
        e = tl.load(ema + offs, mask=mask, other=0.0)
        x = tl.load(src + offs, mask=mask, other=0.0)
        tl.store(ema + offs, _lerp(e, x, decay, EMA_DTYPE, ACC), mask=mask)


def _is_dense(t: torch.Tensor) -> bool:
    """True when t's elements fill [data_ptr, data_ptr + numel) exactly (any axis order)."""
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    return all(sa == sb for sa, sb, n in zip(a.stride(), b.stride(), a.shape) if n != 1)


def _tables(device: torch.device, rows: list[tuple[int, int, int]]):
    """Device (table, owner) for rows of (ema address, tensor address, numel); cached."""
    key = (str(device), tuple(rows))
    hit = _TABLES.get(key)
    if hit is not None:
        _TABLES.move_to_end(key)
        return hit
    n_blocks = np.array([triton.cdiv(n, _BLOCK) for _, _, n in rows], dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(n_blocks)[:-1]])
    table = np.empty((len(rows), 4), dtype=np.int64)
    table[:, :3] = np.array(rows, dtype=np.uint64).astype(np.int64)
    table[:, 3] = first
    owner = np.repeat(np.arange(len(rows), dtype=np.int32), n_blocks)
    host = [torch.from_numpy(table), torch.from_numpy(owner)]
    if device.type == "cuda":
        # pinned + non_blocking: no host synchronisation even on a cache miss
        dev = tuple(h.pin_memory().to(device, non_blocking=True) for h in host)
    else:
        dev = tuple(h.to(device) for h in host)
    _TABLES[key] = dev
    if len(_TABLES) > _CACHE_SIZE:
        _TABLES.popitem(last=False)
    return dev


def ema_update_(ema_tensors: Sequence[torch.Tensor], tensors: Sequence[torch.Tensor], decay: torch.Tensor) -> None:
    """SPEC 7: ``ema <- decay * ema + (1 - decay) * tensor`` for every pair, in place.

    Args:
        ema_tensors (list[Tensor]): updated in place; float32/float16/bfloat16/float64, mixed.
        tensors (list[Tensor]): same shapes; cast to each ema's dtype before mixing.
        decay (Tensor[]): 0-d; moved to the tensors' device if it is elsewhere.
    """
    if len(ema_tensors) == 0:
        return
    device = ema_tensors[0].device
    check_device("ema_update_", ema_tensors[0])
    if decay.device != device:
        decay = decay.to(device, non_blocking=True)
    groups: dict[tuple, list[tuple[int, int, int]]] = {}
    write_back = []
    keep_alive = []  # temporaries referenced by raw addresses until the launches are queued
    for ema, src in zip(ema_tensors, tensors):
        if ema.numel() == 0:
            continue
        work = ema
        if not _is_dense(ema):
            work = ema.contiguous()
            write_back.append((ema, work))
        src = portable_dtype(src, work.dtype)
        if not (_is_dense(src) and _same_layout(src, work)):
            src = torch.empty_like(work, dtype=src.dtype).copy_(src)
        keep_alive.append(src)
        aligned = work.data_ptr() % 16 == 0 and src.data_ptr() % 16 == 0
        key = (work.dtype, src.dtype, aligned)
        groups.setdefault(key, []).append((work.data_ptr(), src.data_ptr(), work.numel()))
    for (ema_dtype, src_dtype, aligned), rows in groups.items():
        table, owner = _tables(device, rows)
        ACC, _ = acc_dtype(ema_dtype)
        ema_update_kernel[(owner.numel(),)](
            table, owner, decay, EMA_DTYPE=_TL_DTYPES[ema_dtype], SRC_DTYPE=_TL_DTYPES[src_dtype],
            ALIGNED=aligned, ACC=ACC, BLOCK=_BLOCK, num_warps=8)
    for ema, work in write_back:
        ema.copy_(work)
