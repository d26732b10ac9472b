"""The contract with pyseg_noise.ops: one launcher per schema, exact positional arguments, safe import."""
from __future__ import annotations

import inspect
import pathlib
import re
import subprocess
import sys

import torch

import pyseg_noise.kernels as K
from tests.kernels.cases import requires_kernels

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _schemas() -> dict:
    """op name -> number of schema arguments, parsed from csrc/ops.cpp."""
    text = (ROOT / "csrc" / "ops.cpp").read_text()
    # join the C++ string literals of each m.def(...) into one schema string
    out = {}
    for block in re.findall(r"m\.def\(((?:\s*\"[^\"]*\"\s*)+)\)", text):
        schema = "".join(re.findall(r"\"([^\"]*)\"", block))
        name, args = re.match(r"(\w+)\((.*?)\)\s*->", schema).groups()
        out[name] = len([a for a in args.split(",") if a.strip()])
    return out


@requires_kernels
def test_every_schema_has_a_launcher_with_its_arguments():
    schemas = _schemas()
    assert len(schemas) == 15
    assert set(K.IMPLS) == set(schemas)
    for name, n_args in schemas.items():
        params = inspect.signature(K.IMPLS[name]).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        assert len(positional) == n_args, f"{name}: launcher takes {len(positional)} arguments, schema {n_args}"
        assert all(p.default is p.empty for p in positional), f"{name}: no defaults, the schema passes all"


def test_import_without_triton_leaves_impls_empty():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import pyseg_noise.kernels as K\n"
        "assert K.IMPLS == {}, K.IMPLS\n"
        "assert 'triton' in K.TRITON_ERROR\n"
        "try:\n    K.require_triton()\nexcept ImportError as e:\n    print('raised:', e)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "raised: pyseg_noise.kernels needs the `triton` package" in res.stdout


@requires_kernels
def test_launch_helpers():
    from pyseg_noise.kernels.launch import acc_dtype, portable_dtype, split_float

    hi, lo = split_float(1.0 / 3.0)
    assert abs((hi + lo) - 1.0 / 3.0) < 1e-15 and hi == float(torch.tensor(hi, dtype=torch.float32))
    assert acc_dtype(torch.float16)[1] == torch.float32 and acc_dtype(torch.float64)[1] == torch.float64
    x = torch.ones(2, dtype=torch.bfloat16)
    assert portable_dtype(x, torch.float64).dtype == torch.float64
    assert portable_dtype(x, torch.float32) is x
