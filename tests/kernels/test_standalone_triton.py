"""The Triton path without the C++ extension (PYSEG_NOISE_NO_EXTENSION=1): schemas defined from
Python, Triton registered for CUDA, backend resolution and the fallback warning.

The variable must be set before pyseg_noise is imported, so each check runs in a subprocess
(with TRITON_INTERPRET=1: the kernels run on CPU tensors in Triton's interpreter).
"""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

from tests.kernels.cases import requires_kernels

pytestmark = requires_kernels

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    env = dict(os.environ, PYSEG_NOISE_NO_EXTENSION="1", TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout


def _cpp_schemas() -> list:
    text = (ROOT / "csrc" / "ops.cpp").read_text()
    return ["".join(re.findall(r"\"([^\"]*)\"", block))
            for block in re.findall(r"m\.def\(((?:\s*\"[^\"]*\"\s*)+)\)", text)]


def test_python_schemas_equal_the_cpp_ones():
    from pyseg_noise.ops.schema import SCHEMAS

    assert list(SCHEMAS) == _cpp_schemas()


def test_schemas_and_cuda_kernels_without_the_extension():
    out = _run("""
        import sys, torch
        import pyseg_noise.ops as ops
        from pyseg_noise.ops.schema import SCHEMAS
        from pyseg_noise.kernels import IMPLS
        assert not ops.HAS_CPU_EXTENSION and "pyseg_noise._C" not in sys.modules
        for schema in SCHEMAS:
            name = schema.split("(")[0]
            op = getattr(torch.ops.pyseg_noise, name).default
            assert str(op._schema) == "pyseg_noise::" + schema, (str(op._schema), schema)
            assert torch._C._dispatch_has_kernel_for_dispatch_key("pyseg_noise::" + name, "CUDA"), name
            assert not torch._C._dispatch_has_kernel_for_dispatch_key("pyseg_noise::" + name, "CPU"), name
        print(len(SCHEMAS), len(IMPLS))
    """)
    assert out.split() == ["15", "15"]


def test_cuda_tensors_resolve_to_triton_and_cpu_warns_truthfully():
    out = _run("""
        import warnings, torch
        from torch._subclasses.fake_tensor import FakeTensorMode
        import pyseg_noise.ops as ops
        from pyseg_noise.ops.dispatch import resolve_backend
        with FakeTensorMode(allow_non_fake_inputs=True):
            x = torch.empty(2, 3, 5, 4, device="cuda")
            t = torch.zeros(2, 5, 4, dtype=torch.long, device="cuda")
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # CUDA tensors: no fallback warning
                assert resolve_backend("pint_pixel_loss", [x], None) == "triton"
                assert resolve_backend("tsman_loss", [x], "triton") == "triton"
        # the fake functions sit on the Python-defined schemas (what torch.compile traces; fake CPU
        # tensors: a CPU-only torch aborts on a fake CUDA tensor's autograd device guard)
        with FakeTensorMode():
            x = torch.empty(2, 3, 5, 4)
            t = torch.zeros(2, 5, 4, dtype=torch.long)
            loss = torch.ops.pyseg_noise.pint_pixel_loss(x, t, x, False, False, "none")
            assert loss.shape == (2, 5, 4)
            l2, att = torch.ops.pyseg_noise.tsman_loss(x, x, t, 0.5, 3, 2, -1, "mean")
            assert l2.shape == () and att.shape == (2, 5, 4)
        x = torch.randn(1, 2, 3, 4)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            ops.attended_cross_entropy(x, torch.zeros(1, 3, 4, dtype=torch.long), torch.ones(1, 3, 4))
            ops.attended_cross_entropy(x, torch.zeros(1, 3, 4, dtype=torch.long), torch.ones(1, 3, 4))
        assert len(w) == 1, [str(m.message) for m in w]
        print(w[0].message)
    """)
    assert "PYSEG_NOISE_NO_EXTENSION=1 is set" in out
    assert "CPU tensors fall back to the eager reference; CUDA tensors still use the Triton kernels" in out
    assert "no fused kernel is available" not in out


def test_triton_kernels_through_the_python_schemas_match_the_reference():
    """The Triton launchers registered on the Python-defined ops (for CPU here, so the interpreter runs
    them through the dispatcher): forward, autograd backward and opcheck against the float64 reference."""
    out = _run("""
        import torch
        import pyseg_noise.ops as ops
        from pyseg_noise.ops import reference as ref
        from pyseg_noise.kernels import IMPLS
        for name, fn in IMPLS.items():
            torch.library.register_kernel("pyseg_noise::" + name, "cpu", fn)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, 5, 6, 4, generator=g, dtype=torch.float64)
        y = torch.randn(2, 3, 5, 6, 4, generator=g, dtype=torch.float64)
        t = torch.randint(0, 3, (2, 5, 6, 4), generator=g)
        q = torch.softmax(torch.randn(x.shape, generator=g, dtype=torch.float64), 1)

        a = x.clone().requires_grad_()
        loss = torch.ops.pyseg_noise.pint_pixel_loss(a, t, q, False, False, "mean")
        loss.backward()
        b = x.clone().requires_grad_()
        expected = ref.pint_pixel_loss(b, t, q)
        expected.backward()
        torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)

        loss, att = torch.ops.pyseg_noise.tsman_loss(x, y, t, 0.5, 3, 2, -1, "sum")
        e_loss, e_att = ref.tsman_loss(x, y, t, reduction="sum")
        torch.testing.assert_close(att, e_att, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(loss, e_loss, rtol=1e-10, atol=1e-12)

        ema, src = [torch.randn(300), torch.randn(7, 5)], [torch.randn(300), torch.randn(7, 5)]
        want = [0.9 * e + 0.1 * s for e, s in zip(ema, src)]
        torch.ops.pyseg_noise.ema_update_(ema, src, torch.tensor(0.9, dtype=torch.float64))
        for e, w in zip(ema, want):
            torch.testing.assert_close(e, w)

        small = x[:1, :, :3, :2, :2].contiguous().requires_grad_()
        torch.library.opcheck(torch.ops.pyseg_noise.attended_cross_entropy,
                              (small, t[:1, :3, :2, :2], torch.rand(1, 3, 2, 2, dtype=torch.float64), "mean"))
        print("ok")
    """)
    assert out.strip() == "ok"
