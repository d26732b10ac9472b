"""Every Triton kernel compiles for sm_80 and sm_90 with ptxas, without spills or 64-bit divisions:
checked without a GPU (see gpu_compile.py for how)."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.kernels.cases import requires_kernels

try:
    from pyseg_noise.kernels.launch import voxel_block
except ImportError:  # no triton: the tests skip
    voxel_block = None

pytestmark = requires_kernels

SCRIPT = pathlib.Path(__file__).with_name("gpu_compile.py")
ROOT = SCRIPT.parents[2]

KERNELS = {
    "teacher_uncertainty_kernel", "softmax_accumulate_kernel", "prob_entropy_kernel", "slice_partials_kernel",
    "slice_mean_kernel", "pint_pixel_loss_kernel", "pint_pixel_loss_backward_kernel", "sum_partials_kernel",
    "pint_image_partials_kernel", "pint_image_finalize_kernel", "pint_image_loss_backward_kernel",
    "disagreement_kernel", "smooth_axis_kernel", "attended_ce_kernel", "attended_ce_backward_kernel",
    "ema_update_kernel",
}


def _nvidia_tools_present() -> bool:
    try:
        import triton
    except ImportError:
        return False
    bin_dir = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    return (bin_dir / "ptxas").exists() and (bin_dir / "cuobjdump").exists()


def _compile(configs: str) -> list:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, str(SCRIPT), "--configs", configs], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=3600)
    if res.returncode == 3:
        pytest.skip(res.stderr.strip().splitlines()[-1])
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def check_rows(rows: list) -> None:
    """No spills, no 64-bit integer division, occupancy-friendly registers, vector loads where provable."""
    assert {r["kernel"] for r in rows} == KERNELS
    for r in rows:
        assert r["target"] == f"cuda:{r['arch']}", f"compiled for another arch: {r}"
        assert r["local"] == 0 and r["stack"] == 0, f"register spills: {r}"
        assert r["div64"] == 0, f"64-bit integer division/remainder in the PTX: {r}"
        if r["dtype"] != "float64":
            assert r["reg"] <= 128, f"more than 128 registers (occupancy): {r}"
    # EMA of aligned tensors: full blocks carry no mask, so 16-byte vector accesses are provable
    for r in rows:
        if r["kernel"] == "ema_update_kernel":
            assert r["ld_vec"] == 16 and r["st_vec"] == 16, f"EMA not vectorized: {r}"
    # contiguous fp32 logits: the voxel kernels read as wide a vector as their block gives a thread
    # (BLOCK / 128 voxels: 16 B for C <= 4, 8 B for C = 5..8 with BLOCK = 256)
    for r in rows:
        if (r["layout"], r["dtype"]) == ("contiguous", "float32") and r["kernel"] in (
                "pint_pixel_loss_kernel", "attended_ce_kernel", "teacher_uncertainty_kernel"):
            want = min(16, 4 * voxel_block(r["C"]) // (32 * r["num_warps"]))
            assert r["ld_vec"] >= want, f"contiguous fp32 loads not vectorized ({want} B expected): {r}"


@pytest.mark.skipif(not _nvidia_tools_present(), reason="triton's NVIDIA backend (ptxas, cuobjdump) is not installed")
def test_kernels_compile_for_sm80_and_sm90_without_spills_or_div64():
    rows = _compile("fast")
    assert {(r["arch"], r["layout"], r["dtype"], r["C"]) for r in rows} >= {
        (90, "contiguous", "float32", 2), (90, "strided", "bfloat16", 3), (90, "channels_last", "float32", 8),
        (80, "contiguous", "bfloat16", 8), (80, "strided", "float32", 2), (80, "channels_last", "bfloat16", 3),
        (90, "strided-wide", "float32", 3)}
    check_rows(rows)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PYSEG_NOISE_SLOW_TESTS") != "1",
                    reason="the full matrix compiles ~1000 kernels (~5 min of CPU time): set PYSEG_NOISE_SLOW_TESTS=1")
@pytest.mark.skipif(not _nvidia_tools_present(), reason="triton's NVIDIA backend (ptxas, cuobjdump) is not installed")
def test_full_compile_matrix():
    """sm_80, sm_90 x contiguous, strided, channels_last x fp32, bf16 x C = 2, 3, 8 (+ fp16, fp64)."""
    rows = _compile("all")
    assert len({(r["arch"], r["layout"], r["dtype"], r["C"]) for r in rows}) == 2 * 3 * 2 * 3 + 2 + 1
    check_rows(rows)


def test_ptx_facts_parser():
    """The PTX reader finds vector widths and 64-bit divisions (so the checks above can fail)."""
    from tests.kernels.ptx_facts import ptx_facts
    ptx = ("ld.global.v4.b32 {%r1, %r2, %r3, %r4}, [%rd1];\n@%p1 st.global.v2.b32 [%rd2], {%r5, %r6};\n"
           "div.s64 %rd3, %rd4, %rd5;\nrem.u64 %rd6, %rd7, %rd8;\ndiv.rn.f32 %f1, %f2, %f3;\ndiv.s32 %r9, %r1, %r2;")
    assert ptx_facts(ptx) == {"ld_vec": 16, "st_vec": 8, "div64": 2}
    assert ptx_facts("ld.global.b16 %rs1, [%rd1];")["ld_vec"] == 2
