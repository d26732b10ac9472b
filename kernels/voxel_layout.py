"""How the voxels of ``[B, (C,) *S]`` tensors with any strides map onto Triton programs.

Two layouts:

* Voxel tiles (pixel-level ops). The launcher first drops size-1 spatial
  axes and merges adjacent axes that are row-major-compatible in EVERY tensor
  of the op (:func:`merge_spatial`), then pads to three axes ``(D0, D1, D2)``
  with size 1 and stride 1 at the end. Program ``(pid, b)`` covers a
  ``T0 x T1 x T2`` tile of that grid in batch item ``b`` (:func:`voxel_tile`):
  the T's are powers of two chosen per call (:func:`tile_shape`), so a voxel's
  ``(i0, i1, i2)`` inside the tile are shifts and masks of its lane index; the
  only divisions are of the program id into tile coordinates, once per
  program, in int32. No per-voxel (let alone 64-bit) division for any strides.
  Offsets within an item are int32 when the item's extent in every tensor is
  below 2**31 elements (always, at paper sizes), int64 otherwise (``WIDE``); the
  batch offset is int64. Triton specializes integer arguments equal to 1 as
  constants, so for the common contiguous (and channels_last) case
  ``D1 = D2 = 1``: the tile is ``BLOCK`` consecutive voxels, the index
  arithmetic folds away and the loads vectorize.

* Slice tiles (per-slice ops, PINT §2.2). The slice axis is moved in front:
  ``[B, (C,) R, P, Q]`` with ``R`` slices of ``W = P * Q`` voxels
  (2D input: ``R = 1``). Program ``(pid_w, pid_r, b)`` covers a
  ``BLOCK_R x BLOCK_W`` tile of (slice, in-slice voxel). When the slice axis
  is the innermost memory axis (the default ``slice_dim=-1`` on contiguous
  ``(X, Y, Z)`` volumes) the tile runs along ``r`` fastest, so a warp reads
  consecutive addresses instead of one voxel every ``Z`` elements; each
  program then reduces its tile to ``BLOCK_R`` per-slice partial sums. The
  in-slice voxels ``w = (p, q)`` are tiled ``BLOCK_P x BLOCK_Q`` (powers of two),
  so ``p`` and ``q`` too come from shifts and masks, not ``w // Q``.
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
    "tile_shape",
    "fit_pow2",
    "voxel_tile",
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


_INT32_LIMIT = 2**31


def fit_pow2(n: int, cap: int) -> int:
    """A power of two p <= min(cap, next_pow2(n)) to tile an axis of n: the largest whose tiles are
    >= 80 % used (n / (cdiv(n, p) * p)), else the best used; at least an eighth of the bound
    (a tile edge of 1-2 would not coalesce)."""
    if n <= 1 or cap <= 1:
        return 1
    hi = min(cap, triton.next_power_of_2(n))
    best, best_use = hi, 0.0
    p = hi
    while p >= max(1, hi // 8):
        use = n / (triton.cdiv(n, p) * p)
        if use >= 0.8:
            return p
        if use > best_use:
            best, best_use = p, use
        p //= 2
    return best


def tile_shape(D0: int, D1: int, D2: int, block: int) -> tuple:
    """(T0, T1, T2): powers of two, product <= block, the innermost axis filled first."""
    T2 = fit_pow2(D2, block)
    T1 = fit_pow2(D1, block // T2)
    T0 = max(1, min(block // (T1 * T2), triton.next_power_of_2(D0)))
    return T0, T1, T2


def _extent(sizes: Sequence[int], strides: Sequence[int]) -> int:
    """Largest element offset within one item: sum over axes of (size - 1) * |stride|."""
    return sum((n - 1) * abs(s) for n, s in zip(sizes, strides))


@dataclass
class SpatialLayout:
    """Merged voxel-tile layout of an op's tensors (see the module docstring).

    Attributes:
        B, N: batch size and voxels per batch item.
        D0, D1, D2: the merged spatial sizes (``N = D0 * D1 * D2``).
        strides: per tensor, ``(batch, [class,] s0, s1, s2)`` strides.
        T0, T1, T2: the tile; ``n_t1``, ``n_t2``: tiles along D1, D2; ``n_tiles``: programs per item.
        wide: in-item offsets need int64.
    """

    B: int
    N: int
    D0: int
    D1: int
    D2: int
    strides: list
    T0: int
    T1: int
    T2: int
    n_t1: int
    n_t2: int
    n_tiles: int
    wide: bool

    @property
    def dims(self) -> tuple:
        """The kernels' ``D0, D1, D2, n_t1, n_t2`` arguments."""
        return self.D0, self.D1, self.D2, self.n_t1, self.n_t2

    @property
    def block(self) -> int:
        return self.T0 * self.T1 * self.T2

    @property
    def tile(self) -> dict:
        """The kernels' tile constexprs."""
        return {"BLOCK": self.block, "T0": self.T0, "T1": self.T1, "T2": self.T2, "WIDE": self.wide}


def grid_layout(B: int, sizes: Sequence[int], strides: list, block: int, extra_extent: int = 0) -> SpatialLayout:
    """Tiling of a (D0, D1, D2) grid of B items whose tensors have ``strides`` (per tensor: the
    batch/class head, then s0, s1, s2); ``extra_extent`` adds to the int32 bound (the contiguous maps)."""
    D0, D1, D2 = sizes
    N = D0 * D1 * D2
    T0, T1, T2 = tile_shape(D0, D1, D2, block)
    n_t1, n_t2 = triton.cdiv(D1, T1), triton.cdiv(D2, T2)
    wide = max([N, extra_extent] + [_extent(sizes, st[-3:]) for st in strides]) >= _INT32_LIMIT
    return SpatialLayout(B, N, D0, D1, D2, strides, T0, T1, T2, n_t1, n_t2,
                         triton.cdiv(D0, T0) * n_t1 * n_t2, wide)


def voxel_layout(tensors: Sequence[torch.Tensor], has_class: Sequence[bool], block: int) -> SpatialLayout:
    """Layout of tensors shaped ``[B, C, *S]`` (``has_class``) or ``[B, *S]``, ``len(S) <= 3``, in tiles of
    at most ``block`` voxels."""
    ref = tensors[0]
    S = list(ref.shape[2:] if has_class[0] else ref.shape[1:])
    spatial_strides = [t.stride()[2 if c else 1:] for t, c in zip(tensors, has_class)]
    sizes, merged = merge_spatial(S, spatial_strides, 3)
    strides = []
    for t, c, m in zip(tensors, has_class, merged):
        head = [t.stride(0), t.stride(1)] if c else [t.stride(0)]
        strides.append(tuple(head + m))
    return grid_layout(ref.shape[0], sizes, strides, block)


@dataclass
class SliceLayout:
    """Slice-tile layout (see the module docstring).

    Attributes:
        B, R, W: batch size, slices per item, voxels per slice.
        P, Q: merged in-slice sizes (``W = P * Q``).
        strides: per tensor, ``(batch, [class,] r, p, q)`` strides.
        slice_inner: tile along slices fastest.
        BLOCK_R, BLOCK_P, BLOCK_Q: tile shape (``BLOCK_W = BLOCK_P * BLOCK_Q``);
        ``n_rblocks``, ``n_wblocks`` (= ``n_pblocks * n_qblocks``): tiles per item.
        wide: in-item offsets need int64.
    """

    B: int
    R: int
    W: int
    P: int
    Q: int
    strides: list
    slice_inner: bool
    BLOCK_R: int
    BLOCK_P: int
    BLOCK_Q: int
    n_rblocks: int
    n_qblocks: int
    n_wblocks: int
    wide: bool

    @property
    def BLOCK_W(self) -> int:
        return self.BLOCK_P * self.BLOCK_Q

    @property
    def dims(self) -> tuple:
        """The kernels' ``R, W, P, Q, n_qblocks`` arguments."""
        return self.R, self.W, self.P, self.Q, self.n_qblocks

    @property
    def tile(self) -> dict:
        return {"SLICE_INNER": self.slice_inner, "BLOCK_R": self.BLOCK_R, "BLOCK_P": self.BLOCK_P,
                "BLOCK_Q": self.BLOCK_Q, "WIDE": self.wide}


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
    (P, Q), merged = merge_spatial([S[a] for a in in_axes], in_strides, 2)
    W = S[in_axes[0]] * S[in_axes[1]]
    strides = []
    for t, c, rs, m in zip(tensors, has_class, r_strides, merged):
        head = [t.stride(0), t.stride(1)] if c else [t.stride(0)]
        strides.append(tuple(head + [rs] + m))
    ref_r = strides[0][2 if has_class[0] else 1]
    ref_in = [abs(s) for s, size in zip(strides[0][-2:], (P, Q)) if size > 1]
    slice_inner = R > 1 and all(abs(ref_r) < s for s in ref_in)
    # Small slices or few slices shrink the tile instead of leaving lanes idle; the inner in-slice
    # axis is tiled to pad least, the outer one takes what is left.
    if slice_inner:
        BLOCK_R = min(max_block_r, triton.next_power_of_2(R))
        cap = max(1, block // BLOCK_R)
    else:
        cap = block
    BLOCK_Q = fit_pow2(Q, cap)
    BLOCK_P = max(1, min(cap // BLOCK_Q, triton.next_power_of_2(P)))
    if not slice_inner:
        BLOCK_R = min(max(1, block // (BLOCK_P * BLOCK_Q)), triton.next_power_of_2(R))
    n_qblocks = triton.cdiv(Q, BLOCK_Q)
    wide = max([W] + [_extent((R, P, Q), st[-3:]) for st in strides]) >= _INT32_LIMIT
    return SliceLayout(ref.shape[0], R, W, P, Q, strides, slice_inner, BLOCK_R, BLOCK_P, BLOCK_Q,
                       triton.cdiv(R, BLOCK_R), n_qblocks, triton.cdiv(P, BLOCK_P) * n_qblocks, wide)


@triton.jit
def voxel_tile(D0, D1, D2, n_t1, n_t2, T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr,
               WIDE: tl.constexpr):
    """(i0, i1, i2, v, mask) of this program's T0 x T1 x T2 tile of the (D0, D1, D2) voxel grid.

    ``v`` is the row-major voxel index within the item. Program id 0 is split into tile
    coordinates once, in int32 (a grid has < 2**31 programs); per voxel there are only
    shifts, masks, multiplies and adds, in int32 (int64 with WIDE).
    """
    pid = tl.program_id(0)
    t2 = pid % n_t2
    rest = pid // n_t2
    t1 = rest % n_t1
    t0 = rest // n_t1
    if WIDE:
        t0 = t0.to(tl.int64)
        t1 = t1.to(tl.int64)
        t2 = t2.to(tl.int64)
    k = tl.arange(0, T0 * T1 * T2)
    i2 = t2 * T2 + k % T2
    i1 = t1 * T1 + (k // T2) % T1
    i0 = t0 * T0 + k // (T1 * T2)
    return i0, i1, i2, (i0 * D1 + i1) * D2 + i2, (i0 < D0) & (i1 < D1) & (i2 < D2)


@triton.jit
def slice_tile(pid_r, pid_w, R, P, Q, n_qblocks, SLICE_INNER: tl.constexpr, BLOCK_R: tl.constexpr,
               BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, WIDE: tl.constexpr):
    """(r, p, q, mask) of a BLOCK_R x (BLOCK_P x BLOCK_Q) (slice, in-slice voxel) tile, flattened to
    [BLOCK_R * BLOCK_W]; per voxel only shifts and masks (the block sizes are powers of two)."""
    BLOCK_W: tl.constexpr = BLOCK_P * BLOCK_Q
    k = tl.arange(0, BLOCK_R * BLOCK_W)
    if SLICE_INNER:
        r_loc = k % BLOCK_R
        w_loc = k // BLOCK_R
    else:
        r_loc = k // BLOCK_W
        w_loc = k % BLOCK_W
    tq = pid_w % n_qblocks
    tp = pid_w // n_qblocks
    tr = pid_r
    if WIDE:
        tq = tq.to(tl.int64)
        tp = tp.to(tl.int64)
        tr = tr.to(tl.int64)
    r = tr * BLOCK_R + r_loc
    p = tp * BLOCK_P + w_loc // BLOCK_Q
    q = tq * BLOCK_Q + w_loc % BLOCK_Q
    return r, p, q, (r < R) & (p < P) & (q < Q)


@triton.jit
def sum_per_slice(vals, SLICE_INNER: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    """Sum a flattened tile from :func:`slice_tile` per slice -> [BLOCK_R]."""
    if SLICE_INNER:
        out = tl.sum(tl.reshape(vals, (BLOCK_W, BLOCK_R)), axis=0)
    else:
        out = tl.sum(tl.reshape(vals, (BLOCK_R, BLOCK_W)), axis=1)
    return out
