"""Compile every Triton kernel of pyseg_noise for sm_80 (A100) and sm_90 (H100) on a machine WITHOUT a GPU.

The interpreter runs the kernels' Python semantics; this checks the other
half: that the compiler front end accepts them and ptxas (shipped in the
triton wheel) builds them, and it reads what the build says about them:

- ``reg``, ``local``, ``stack``: registers per thread and spill memory, from the
  cubin's resource usage (``cuobjdump -res-usage``);
- ``ld_vec``/``st_vec``: the widest global load/store in the PTX, in bytes
  (16 = ``ld.global.v4`` of 32-bit words);
- ``div64``: 64-bit integer divisions/remainders (``div``/``rem`` ``.s64``/``.u64``) in
  the PTX (each is a ~70-instruction subroutine on the GPU; none should be left).

How: a stand-in driver reports a ``cuda:<arch>`` target, and ``kernel[grid](...)``
is redirected to ``JITFunction.run(..., warmup=True)``, which compiles without
launching. The launchers run on CPU tensors, so the argument types and the
integer specializations (value 1, multiples of 16) are those of a real call.

Run: ``python tests/kernels/gpu_compile.py [--configs fast|all] [--markdown]``
(one JSON line per compiled kernel, or the table of docs/KERNELS.md). A config is
``arch-layout-dtype-C``: arch 80/90, layout contiguous / strided (every other
element of the last axis of a longer buffer: no axes merge) / channels_last
(channels_last_3d logits), dtype float32 / bfloat16, C = 2, 3, 8 ("all": also a
float16 and a float64 config).
It relies on Triton internals (3.9); tests/kernels/test_gpu_compile.py runs it in a
subprocess and skips when it cannot set itself up.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import torch  # noqa: E402
import triton  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ptx_facts import ptx_facts  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver  # noqa: E402
from triton.runtime import jit as triton_jit  # noqa: E402

ARCHS = (80, 90)
LAYOUTS = ("contiguous", "strided", "channels_last")
DTYPES = (torch.float32, torch.bfloat16)
CLASSES = (2, 3, 8)

# Every arch, layout, dtype and C at least once in 6 configs (the CI test: ~20 s of CPU time);
# "all" is the full 2 x 3 x 2 x 3 product plus float16 and float64 (@pytest.mark.slow).
FAST = (
    (90, "contiguous", torch.float32, 2),
    (90, "strided", torch.bfloat16, 3),
    (90, "channels_last", torch.float32, 8),
    (80, "contiguous", torch.bfloat16, 8),
    (80, "strided", torch.float32, 2),
    (80, "channels_last", torch.bfloat16, 3),
    # int64 in-item offsets (WIDE: forced here, real only for items of >= 2**31 elements)
    (90, "strided-wide", torch.float32, 3),
)
EXTRA = (  # the other dtypes (float64: gradcheck, not a fast path)
    (90, "contiguous", torch.float16, 8),
    (90, "strided", torch.float64, 3),
)


class _Driver:
    """Just enough of a driver for JITFunction.run(warmup=True) to compile for one arch."""

    arch = 90

    def get_current_device(self):
        # JITFunction keeps its compile target per device id: one id per arch, so switching
        # arch really recompiles (the target of each kernel is read back into the rows)
        return self.arch

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", self.arch, 32)

    def get_active_torch_device(self):
        return torch.device("cpu")

    def get_device_interface(self):
        return torch.cuda


_TOOLS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def resource_usage(kernel) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    try:
        out = subprocess.run([os.path.join(_TOOLS, "cuobjdump"), "-res-usage", f.name], capture_output=True,
                             text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    usage = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", out))
    return {k.lower(): int(v) for k, v in usage.items()}


def _layout(x: torch.Tensor, layout: str, has_class: bool) -> torch.Tensor:
    if layout == "strided":
        # every other element of a buffer one longer: a crop-like view whose axes cannot be merged
        big = torch.zeros(x.shape[:-1] + (2 * x.shape[-1] + 1,), dtype=x.dtype)
        big[..., 1::2] = x
        return big[..., 1::2]
    if layout == "channels_last" and has_class and x.dim() == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x.contiguous()


def compile_config(K, arch: int, layout: str, dtype: torch.dtype, C: int, compiled: list) -> None:
    """Run every launcher once on inputs of this config (compiling, not launching)."""
    _Driver.arch = arch
    I = K.IMPLS
    B, S = 2, (48, 48, 32)  # a (X, Y, Z) patch, slices along Z
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    x = _layout(torch.randn(B, C, *S).to(dtype), layout, True)
    y = _layout(torch.randn(B, C, *S).to(dtype), layout, True)
    t = _layout(torch.randint(0, C, (B, *S)), layout, False)
    q = _layout(torch.softmax(torch.randn(B, C, *S), 1).to(dtype), layout, True)
    att = _layout(torch.rand(B, *S).to(dtype), layout, False)
    g = torch.tensor(1.0, dtype=dtype)
    alpha = torch.rand(B, S[-1], dtype=acc)
    I["teacher_uncertainty"](torch.stack([x, y]) if layout == "contiguous" else
                             torch.stack([x, y], 1).transpose(0, 1))
    I["softmax_accumulate_"](_layout(torch.zeros(B, C, *S, dtype=acc), layout, True), x)
    I["prob_entropy"](q, 0.5)
    I["slice_uncertainty"](att, -1)
    for reduction in ("mean", "none"):
        I["pint_pixel_loss"](x, t, q, True, True, reduction)
        I["pint_image_loss"](x, t, q, False, False, -1, reduction)
        I["attended_cross_entropy"](x, t, att, reduction)
        I["tsman_loss"](x, y, t, 0.5, 3, 2, -1, reduction)
    I["pint_pixel_loss_backward"](g, x, t, q, False, False, "mean")
    I["pint_image_loss_backward"](g, x, t, q, alpha, True, 0, "mean")
    I["loss_attention"](x, y, 0.5, 3, 3, -1)
    I["attended_cross_entropy_backward"](g, x, t, att, "sum")
    I["tsman_loss_backward"](g, x, y, t, att, "mean")
    # aligned parameter-like tensors (one full block and a tail each)
    I["ema_update_"]([torch.zeros(5000, dtype=dtype)], [torch.ones(5000, dtype=dtype)], torch.tensor(0.9))


SETUP_FAILED = 3  # exit code: this Triton's internals differ, the caller should skip rather than fail


def _configs(which: str):
    if which == "fast":
        return list(FAST)
    return list(itertools.product(ARCHS, LAYOUTS, DTYPES, CLASSES)) + list(EXTRA) + [FAST[-1]]


def _markdown(rows: list) -> str:
    """Per kernel and arch: registers (min-max over configs), spill bytes, the widest global load /
    store per layout (bytes, max over dtypes and C), and 64-bit divisions."""
    by = {}
    for r in rows:
        by.setdefault((r["kernel"], r["arch"]), []).append(r)
    lines = ["| kernel | arch | registers | spill bytes | widest ld / st (B): contiguous, strided, channels_last "
             "| div/rem .64 |", "|---|---|---|---|---|---|"]
    for (kernel, arch), rs in sorted(by.items()):
        rs = [r for r in rs if r["layout"] in LAYOUTS]  # the forced-WIDE config is checked, not tabled
        regs = [r["reg"] for r in rs if r["dtype"] != "float64"]
        spills = max(r["local"] + r["stack"] for r in rs)
        vec = []
        for layout in LAYOUTS:
            lr = [r for r in rs if r["layout"] == layout and r["dtype"] != "float64"]
            vec.append(f"{max(r['ld_vec'] for r in lr)}/{max(r['st_vec'] for r in lr)}" if lr else "-")
        lines.append(f"| {kernel} | sm_{arch} | {min(regs)}-{max(regs)} | {spills} | {', '.join(vec)} | "
                     f"{max(r['div64'] for r in rs)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", choices=("fast", "all"), default="fast")
    parser.add_argument("--markdown", action="store_true", help="print the docs/KERNELS.md table instead")
    args = parser.parse_args(argv)
    compiled = []

    def getitem(self, grid):
        def launch(*a, **kw):
            kernel = self.run(*a, grid=grid, warmup=True, **kw)
            compiled.append((self.fn.__name__, kernel))
            return kernel
        return launch

    try:
        driver.set_active(_Driver())
        triton_jit.KernelInterface.__getitem__ = getitem
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the installed Triton
        print(f"cannot set up sm_80/sm_90 compilation with this Triton: {exc!r}", file=sys.stderr)
        return SETUP_FAILED

    import pyseg_noise.kernels as K
    from pyseg_noise.kernels import launch

    launch.INTERPRETED = True  # let the CPU tensors past check_device: nothing is launched
    rows = []
    from pyseg_noise.kernels import voxel_layout

    for arch, layout, dtype, C in _configs(args.configs):
        start = len(compiled)
        voxel_layout._INT32_LIMIT = 1 if layout.endswith("-wide") else 2**31
        compile_config(K, arch, layout.removesuffix("-wide"), dtype, C, compiled)
        for name, kernel in compiled[start:]:
            target = kernel.metadata.target
            row = {"arch": arch, "target": f"{target.backend}:{target.arch}", "layout": layout,
                   "dtype": str(dtype)[6:], "C": C, "kernel": name,
                   "num_warps": kernel.metadata.num_warps, **resource_usage(kernel),
                   **ptx_facts(kernel.asm["ptx"])}
            rows.append(row)
            if not args.markdown:
                print(json.dumps(row), flush=True)
    if args.markdown:
        print(_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
