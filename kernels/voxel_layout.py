"""How the voxels of ``[B, (C,) *S]`` tensors with any strides map onto Triton programs.

Two layouts:

* Voxel blocks (pixel-level ops). Program ``(pid_v, b)`` covers voxels
  ``pid_v * BLOCK + [0, BLOCK)`` of batch item ``b`` in logical row-major
  order of ``S``. The launcher first drops size-1 spatial axes and merges
  adjacent axes that are row-major-compatible in EVERY tensor of the op
  (:func:`merge_spatial`), then pads to three axes ``(D0, D1, D2)`` with size 1
  and stride 1 at the end. Triton specializes integer arguments equal to 1 as
  constants, so for the common contiguous case ``D1 = D2 = 1`` and the spatial
  stride ``1``: the index arithmetic folds away and the loads vectorize.
  Arbitrary strides cost one div/mod pair per extra axis.

* Slice tiles (per-slice ops, PINT §2.2). The slice axis is moved in front:
  ``[B, (C,) R, P, Q]`` with ``R`` slices of ``W = P * Q`` voxels
  (2D input: ``R = 1``). Program ``(pid_w, pid_r, b)`` covers a
  ``BLOCK_R x BLOCK_W`` tile of (slice, in-slice voxel). When the slice axis
  is the innermost memory axis (the default ``slice_dim=-1`` on contiguous
  ``(X, Y, Z)`` volumes) the tile runs along ``r`` fastest, so a warp reads
  consecutive addresses instead of one voxel every ``Z`` elements; each
  program then reduces its tile to ``BLOCK_R`` per-slice partial sums.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import triton
import triton.language as tl

__all__ = [
    "merge_spatial",
    "SpatialLayout",
    "voxel_layout",
    "SliceLayout",
    "slice_layout",
    "spatial_index",
    "slice_tile",
    "sum_per_slice",
]


def merge_spatial(sizes: Sequence[int], strides: Sequence[Sequence[int]], n_out: int):
    """Merge spatial axes that are row-major-compatible in every tensor.

    Args:
        sizes: the spatial sizes, shared by all tensors.
        strides: per tensor, its strides for those axes.
        n_out: how many axes to return (padded at the end with size 1, stride 1).

    Returns:
        (sizes, strides): lists of length ``n_out``; logical row-major order is kept.
    """
    out_sizes: list[int] = []
    out_strides: list[list[int]] = [[] for _ in strides]
    for i, n in enumerate(sizes):
        if n == 1:
            continue
        if out_sizes and all(st[-1] == s[i] * n for st, s in zip(out_strides, strides)):
            out_sizes[-1] *= n
            for st, s in zip(out_strides, strides):
                st[-1] = s[i]
        else:
            out_sizes.append(n)
            for st, s in zip(out_strides, strides):
                st.append(s[i])
    if len(out_sizes) > n_out:
        raise ValueError(f"cannot fold {len(sizes)} spatial axes into {n_out}")
    while len(out_sizes) < n_out:
        out_sizes.append(1)
        for st in out_strides:
            st.append(1)
    return out_sizes, out_strides


@dataclass
class SpatialLayout:
    """Merged voxel-block layout of an op's tensors (see the module docstring).

    Attributes:
        B, N: batch size and voxels per batch item.
        D1, D2: the inner two merged spatial sizes (``D0 = N // (D1 * D2)``).
        strides: per tensor, ``(batch, [class,] s0, s1, s2)`` strides.
    """

    B: int
    N: int
    D1: int
    D2: int
    strides: list


def voxel_layout(tensors: Sequence[torch.Tensor], has_class: Sequence[bool]) -> SpatialLayout:
    """Layout of tensors shaped ``[B, C, *S]`` (``has_class``) or ``[B, *S]``, ``len(S) <= 3``."""
    ref = tensors[0]
    S = list(ref.shape[2:] if has_class[0] else ref.shape[1:])
    spatial_strides = [t.stride()[2 if c else 1:] for t, c in zip(tensors, has_class)]
    sizes, merged = merge_spatial(S, spatial_strides, 3)
    strides = []
    for t, c, m in zip(tensors, has_class, merged):
        head = [t.stride(0), t.stride(1)] if c else [t.stride(0)]
        strides.append(tuple(head + m))
    N = 1
    for n in S:
        N *= n
    return SpatialLayout(ref.shape[0], N, sizes[1], sizes[2], strides)


@dataclass
class SliceLayout:
    """Slice-tile layout (see the module docstring).

    Attributes:
        B, R, W: batch size, slices per item, voxels per slice.
        Q: inner merged in-slice size (``P = W // Q``).
        strides: per tensor, ``(batch, [class,] r, p, q)`` strides.
        slice_inner: tile along slices fastest.
        BLOCK_R, BLOCK_W: tile shape; ``n_rblocks``, ``n_wblocks``: tiles per item.
    """

    B: int
    R: int
    W: int
    Q: int
    strides: list
    slice_inner: bool
    BLOCK_R: int
    BLOCK_W: int
    n_rblocks: int
    n_wblocks: int


def slice_layout(tensors: Sequence[torch.Tensor], has_class: Sequence[bool], slice_dim: int,
                 block: int, max_block_r: int = 32) -> SliceLayout:
    """Slice-tile layout of ``[B, (C,) *S]`` tensors cut along spatial axis ``slice_dim``.

    ``tensors[0]`` decides whether the slice axis is the innermost memory axis.
    For 2D input (``len(S) == 2``) each batch item is one slice.
    """
    ref = tensors[0]
    S = list(ref.shape[2:] if has_class[0] else ref.shape[1:])
    n = len(S)
    r_strides, in_strides = [], []
    if n == 2:
        R, in_axes = 1, [0, 1]
        r_strides = [1 for _ in tensors]
    else:
        sd = slice_dim % n
        R, in_axes = S[sd], [a for a in range(n) if a != sd]
    for t, c in zip(tensors, has_class):
        sp = t.stride()[2 if c else 1:]
        if n != 2:
            r_strides.append(sp[sd])
        in_strides.append([sp[a] for a in in_axes])
    (_, Q), merged = merge_spatial([S[a] for a in in_axes], in_strides, 2)
    W = S[in_axes[0]] * S[in_axes[1]]
    strides = []
    for t, c, rs, m in zip(tensors, has_class, r_strides, merged):
        head = [t.stride(0), t.stride(1)] if c else [t.stride(0)]
        strides.append(tuple(head + [rs] + m))
    ref_r = strides[0][2 if has_class[0] else 1]
    ref_in = [abs(s) for s, size in zip(strides[0][-2:], (W // Q, Q)) if size > 1]
    slice_inner = R > 1 and all(abs(ref_r) < s for s in ref_in)
    # Small slices or few slices shrink the tile instead of leaving lanes idle.
    if slice_inner:
        BLOCK_R = min(max_block_r, triton.next_power_of_2(R))
        BLOCK_W = min(max(1, block // BLOCK_R), triton.next_power_of_2(W))
    else:
        BLOCK_W = min(block, triton.next_power_of_2(W))
        BLOCK_R = min(max(1, block // BLOCK_W), triton.next_power_of_2(R))
    return SliceLayout(ref.shape[0], R, W, Q, strides, slice_inner, BLOCK_R, BLOCK_W,
                       triton.cdiv(R, BLOCK_R), triton.cdiv(W, BLOCK_W))


@triton.jit
def spatial_index(v, D1, D2):
    """Row-major (i0, i1, i2) of flat in-item voxel indices v (int64) over merged sizes (D0, D1, D2)."""
    i2 = v % D2
    t = v // D2
    return t // D1, t % D1, i2


@triton.jit
def slice_tile(pid_r, pid_w, R, W, SLICE_INNER: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    """(r, w, mask) of a BLOCK_R x BLOCK_W (slice, in-slice voxel) tile, flattened to [BLOCK_R * BLOCK_W]."""
    k = tl.arange(0, BLOCK_R * BLOCK_W)
    if SLICE_INNER:
        r_loc = k % BLOCK_R
        w_loc = k // BLOCK_R
    else:
        r_loc = k // BLOCK_W
        w_loc = k % BLOCK_W
    r = pid_r.to(tl.int64) * BLOCK_R + r_loc
    w = pid_w.to(tl.int64) * BLOCK_W + w_loc
    return r, w, (r < R) & (w < W)


@triton.jit
def sum_per_slice(vals, SLICE_INNER: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    """Sum a flattened tile from :func:`slice_tile` per slice -> [BLOCK_R]."""
    if SLICE_INNER:
        out = tl.sum(tl.reshape(vals, (BLOCK_W, BLOCK_R)), axis=0)
    else:
        out = tl.sum(tl.reshape(vals, (BLOCK_R, BLOCK_W)), axis=1)
    return out
