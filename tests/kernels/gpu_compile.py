"""Compile every Triton kernel of pyseg_noise for an H100 (sm_90) on a machine WITHOUT a GPU.

The interpreter runs the kernels' Python semantics; this checks the other
half: that the compiler front end accepts them and ptxas (shipped in the
triton wheel) builds them, and it reports registers and spills.

How: a stand-in driver reports a ``cuda:90`` target, and ``kernel[grid](...)``
is redirected to ``JITFunction.run(..., warmup=True)``, which compiles without
launching. The launchers run on CPU tensors, so the argument types and the
integer specializations (value 1, multiples of 16) are those of a real call.

Run: ``python tests/kernels/sm90_compile.py`` (one JSON line per compiled kernel).
It relies on Triton internals (3.9); tests/kernels/test_sm90_compile.py runs it
in a subprocess and skips when it cannot set itself up.
"""
from __future__ import annotations

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
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver  # noqa: E402
from triton.runtime import jit as triton_jit  # noqa: E402


class _Sm90Driver:
    """Just enough of a driver for JITFunction.run(warmup=True) to compile for sm_90."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_active_torch_device(self):
        return torch.device("cpu")

    def get_device_interface(self):
        return torch.cuda


def _resource_usage(kernel) -> dict:
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    try:
        out = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    usage = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", out))
    return {k.lower(): int(v) for k, v in usage.items()}


SETUP_FAILED = 3  # exit code: this Triton's internals differ, the caller should skip rather than fail


def main() -> int:
    compiled = []

    def getitem(self, grid):
        def launch(*args, **kwargs):
            kernel = self.run(*args, grid=grid, warmup=True, **kwargs)
            compiled.append((self.fn.__name__, kernel))
            return kernel
        return launch

    try:
        driver.set_active(_Sm90Driver())
        triton_jit.KernelInterface.__getitem__ = getitem
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the installed Triton
        print(f"cannot set up sm_90 compilation with this Triton: {exc!r}", file=sys.stderr)
        return SETUP_FAILED

    import pyseg_noise.kernels as K
    from pyseg_noise.kernels import launch

    launch.INTERPRETED = True  # let the CPU tensors past check_device: nothing is launched
    I = K.IMPLS
    S = (2, 48, 48, 32)  # a (X, Y, Z) patch, slices along Z
    for dtype, C in ((torch.float32, 2), (torch.float16, 8), (torch.bfloat16, 3), (torch.float64, 5)):
        B = S[0]
        x = torch.randn(B, C, *S[1:]).to(dtype)
        t = torch.randint(0, C, S)
        q = torch.softmax(torch.randn(B, C, *S[1:]), 1).to(dtype)
        att = torch.rand(S).to(dtype)
        g = torch.tensor(1.0, dtype=dtype)
        alpha = torch.rand(B, S[-1], dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        tag = f"{str(dtype)[6:]}-C{C}"
        start = len(compiled)
        I["teacher_uncertainty"](torch.stack([x, x]))
        I["softmax_accumulate_"](torch.zeros(B, C, *S[1:], dtype=torch.float64 if dtype == torch.float64
                                             else torch.float32), x)
        I["prob_entropy"](q, 0.5)
        I["slice_uncertainty"](att, -1)
        for reduction in ("mean", "none"):
            I["pint_pixel_loss"](x, t, q, True, True, reduction)
            I["pint_image_loss"](x, t, q, False, False, -1, reduction)
            I["attended_cross_entropy"](x, t, att, reduction)
            I["tsman_loss"](x, x, t, 0.5, 3, 2, -1, reduction)
        I["pint_pixel_loss_backward"](g, x, t, q, False, False, "mean")
        I["pint_image_loss_backward"](g, x, t, q, alpha, True, 0, "mean")
        I["loss_attention"](x, x, 0.5, 3, 3, -1)
        I["attended_cross_entropy_backward"](g, x, t, att, "sum")
        I["tsman_loss_backward"](g, x, x, t, att, "mean")
        I["ema_update_"]([torch.zeros(5000, dtype=dtype)], [torch.ones(5000)], torch.tensor(0.9))
        for name, kernel in compiled[start:]:
            print(json.dumps({"case": tag, "kernel": name, "num_warps": kernel.metadata.num_warps,
                              **_resource_usage(kernel)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
