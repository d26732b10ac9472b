"""How the launchers fold strided tensors into program grids (pure Python, hand-computed cases)."""
from __future__ import annotations

import torch

from tests.kernels.cases import requires_kernels

pytestmark = requires_kernels


def test_merge_spatial_contiguous_folds_to_one_axis():
    from pyseg_noise.kernels.voxel_layout import merge_spatial

    sizes, strides = merge_spatial([3, 41, 37], [[41 * 37, 37, 1], [41 * 37, 37, 1]], 3)
    assert sizes == [3 * 41 * 37, 1, 1] and strides == [[1, 1, 1], [1, 1, 1]]


def test_merge_spatial_keeps_axes_one_tensor_breaks():
    from pyseg_noise.kernels.voxel_layout import merge_spatial

    # second tensor is every other element of a [4, 5, 13] buffer: (X, Y) still merge, Z stays apart
    sizes, strides = merge_spatial([4, 5, 6], [[30, 6, 1], [65, 13, 2]], 3)
    assert sizes == [20, 6, 1] and strides == [[6, 1, 1], [13, 2, 1]]
    # a uniformly strided tensor folds completely
    sizes, strides = merge_spatial([4, 5, 6], [[60, 12, 2]], 3)
    assert sizes == [120, 1, 1] and strides == [[2, 1, 1]]
    # size-1 axes vanish; stride-0 (expanded) axes merge with each other
    sizes, strides = merge_spatial([1, 5, 6], [[99, 0, 0], [30, 6, 1]], 3)
    assert sizes == [30, 1, 1] and strides == [[0, 1, 1], [1, 1, 1]]
    sizes, strides = merge_spatial([5, 6], [[0, 1], [6, 1]], 3)  # broadcast along X only: no merge
    assert sizes == [5, 6, 1] and strides == [[0, 1, 1], [6, 1, 1]]


def test_voxel_layout_of_channels_last_logits():
    from pyseg_noise.kernels.voxel_layout import voxel_layout

    logits = torch.empty(2, 3, 4, 5, 6).to(memory_format=torch.channels_last_3d)
    target = torch.empty(2, 4, 5, 6, dtype=torch.long)
    lay = voxel_layout([logits, target], [True, False], 1024)
    assert (lay.B, lay.N, lay.D0, lay.D1, lay.D2) == (2, 120, 120, 1, 1)
    assert lay.strides[0] == (360, 1, 3, 1, 1) and lay.strides[1] == (120, 1, 1, 1)
    # one axis: BLOCK consecutive voxels per program, as before the tiling
    assert (lay.T0, lay.T1, lay.T2, lay.n_tiles, lay.wide) == (128, 1, 1, 1, False)


def test_tile_shape_pads_the_inner_axes_least():
    from pyseg_noise.kernels.voxel_layout import fit_pow2, tile_shape, voxel_layout

    # the largest edge whose tiles are >= 80 % used: 80 -> 32 (83 %), 48 -> 16 (100 %)
    assert fit_pow2(80, 1024) == 32 and fit_pow2(32, 1024) == 32 and fit_pow2(48, 1024) == 16
    assert fit_pow2(1, 1024) == 1 and fit_pow2(100, 8) == 8 and fit_pow2(5, 64) == 2
    assert tile_shape(2304, 32, 1, 1024) == (32, 32, 1)
    assert tile_shape(3, 5, 80, 1024) == (4, 2, 32)  # T0 stops at next_pow2(D0)
    # a crop of a volume: no axes merge, tiles of 3 axes, int32 offsets
    big = torch.empty(2, 3, 50, 60, 81)
    x = big[:, :, 1:49, 2:50, 1::2]
    lay = voxel_layout([x, torch.empty(2, 48, 48, 40, dtype=torch.long)], [True, False], 512)
    assert (lay.D0, lay.D1, lay.D2) == (48, 48, 40)
    assert lay.block <= 512 and lay.T2 == 16 and not lay.wide
    assert lay.n_tiles == -(-48 // lay.T0) * -(-48 // lay.T1) * 3
    # an item spanning >= 2**31 elements needs int64 offsets
    huge = torch.empty_strided((1, 2, 3, 4), (0, 0, 2**30, 1), device="meta")
    assert voxel_layout([huge], [True], 1024).wide


def test_slice_layout_tiles_along_the_innermost_slice_axis():
    from pyseg_noise.kernels.voxel_layout import slice_layout

    logits = torch.empty(2, 2, 10, 12, 80)
    lay = slice_layout([logits], [True], -1, 1024)
    assert lay.slice_inner and (lay.R, lay.W, lay.Q) == (80, 120, 1)
    assert (lay.BLOCK_R, lay.BLOCK_W, lay.n_rblocks, lay.n_wblocks) == (32, 32, 3, 4)
    assert (lay.P, lay.BLOCK_P, lay.BLOCK_Q) == (120, 32, 1)
    assert lay.strides[0] == (19200, 9600, 1, 80, 1)
    lay = slice_layout([logits], [True], 0, 1024)
    assert not lay.slice_inner and (lay.R, lay.W, lay.Q) == (10, 960, 1)
    assert (lay.BLOCK_R, lay.BLOCK_W) == (1, 1024)
    lay = slice_layout([torch.empty(3, 2, 7, 9)], [True], -1, 1024)  # 2D: one slice per item
    assert not lay.slice_inner and (lay.R, lay.W) == (1, 63) and (lay.BLOCK_R, lay.BLOCK_W) == (1, 64)


@requires_kernels
def test_int64_offsets_give_the_int32_results(monkeypatch):
    """The WIDE path (int64 in-item offsets, for items of >= 2**31 elements) computes the same numbers:
    forced here on a crop-like strided case of every tiled kernel family."""
    import pyseg_noise.kernels as K
    from pyseg_noise.kernels import voxel_layout as VL
    from tests.kernels.cases import Case, make_logits, make_prob, make_target

    case = Case((2, 3, 7, 6, 5), torch.float32, "sliced", 0)
    x, y, t, q = make_logits(case, 1), make_logits(case, 2), make_target(case, 3), make_prob(case, 4)
    g = torch.ones(t.shape, dtype=x.dtype, device=x.device)

    def run():
        out = [K.IMPLS["pint_pixel_loss"](x, t, q, False, False, "none"),
               K.IMPLS["pint_pixel_loss_backward"](g, x, t, q, True, False, "none"),
               *K.IMPLS["pint_image_loss"](x, t, q, False, False, 0, "none"),
               K.IMPLS["slice_uncertainty"](q[:, 0], 0),
               *K.IMPLS["tsman_loss"](x, y, t, 0.5, 3, 3, -1, "none"),
               K.IMPLS["loss_attention"](x, y, 0.5, 3, 2, 0)]
        return out

    narrow = run()
    assert not VL.voxel_layout([x, t], [True, False], 512).wide
    monkeypatch.setattr(VL, "_INT32_LIMIT", 1)
    assert VL.voxel_layout([x, t], [True, False], 512).wide
    for a, b in zip(narrow, run()):
        assert torch.equal(a, b)
