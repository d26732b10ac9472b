"""Benchmarks of TSMAN's ops (SPEC 5-6) against eager PyTorch and torch.compile.

Paper size: two streams of logits, B=4, C=3, 64^3 patches, fp32, int64 labels
(TSMAN does not state its batch size; 4 matches PINT's and fits a 12 GB GPU of
the time with two DenseVoxNets). The eager baseline of ``tsman_loss`` is the
reference: the disagreement map smoothed by a dense ``F.conv3d`` with the
outer product of the Gaussian weights (a 3x3x1 kernel for ``spatial_dims=2``,
3x3x3 for ``spatial_dims=3``; ``reference.loss_attention``) and two
``F.cross_entropy`` calls.

Run with ``python -m benchmarks --ops tsman`` or
``python -m pytest benchmarks/bench_tsman.py``.
"""
from __future__ import annotations

from typing import Callable, Dict, List

import torch

from . import pytest_support
from .op_bench import OpBench
from .sizes import Size, volume_sizes

__all__ = ["BENCHES"]

PAPER = dict(B=4, C=3, paper_volume=(64, 64, 64))

#: variant label -> keyword arguments of loss_attention / tsman_loss
SMOOTHING: Dict[str, dict] = {
    "spatial_dims=2": dict(sigma2=0.5, kernel_size=3, spatial_dims=2, slice_dim=-1),
    "spatial_dims=3": dict(sigma2=0.5, kernel_size=3, spatial_dims=3, slice_dim=-1),
}


def _two_streams(size: Size, device, dtype, g, requires_grad: bool) -> dict:
    d = size.dims
    a = 2.0 * torch.randn(d["B"], d["C"], *d["S"], generator=g)
    # stream b disagrees with a on a fraction of voxels, as two networks do
    b = a + torch.randn(a.shape, generator=g)
    a, b = (t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in (a, b))
    return {"logits_a": a, "logits_b": b}


def _target(size: Size, device, g) -> torch.Tensor:
    d = size.dims
    return torch.randint(0, d["C"], (d["B"], *d["S"]), generator=g).to(device)


class _TsmanBench(OpBench):
    family = "tsman"

    def sizes(self, which: str) -> List[Size]:
        return volume_sizes(which, **PAPER)


class LossAttention(_TsmanBench):
    """SPEC 5: Gaussian-smoothed XOR of the two streams' argmax (no gradient)."""

    name = "loss_attention"
    variants = tuple(SMOOTHING)

    def inputs(self, size, device, dtype, g) -> dict:
        return _two_streams(size, device, dtype, g, requires_grad=False)

    def call(self, fn: Callable, x: dict, variant: str):
        return fn(x["logits_a"], x["logits_b"], **SMOOTHING[variant])


class AttendedCrossEntropy(_TsmanBench):
    """SPEC 6: attention * CE per voxel, mean over voxels; one stream."""

    name = "attended_cross_entropy"
    modes = ("fwd", "bwd", "fwdbwd")

    def inputs(self, size, device, dtype, g) -> dict:
        d = size.dims
        logits = (2.0 * torch.randn(d["B"], d["C"], *d["S"], generator=g)).to(device=device, dtype=dtype)
        attention = torch.rand(d["B"], *d["S"], generator=g).to(device=device, dtype=dtype)
        return {"logits": logits.requires_grad_(), "target": _target(size, device, g), "attention": attention}

    def call(self, fn: Callable, x: dict, variant: str):
        return fn(x["logits"], x["target"], x["attention"], reduction="mean")

    def grad_inputs(self, x: dict) -> List[torch.Tensor]:
        return [x["logits"]]


class TsmanLoss(_TsmanBench):
    """Both streams' attended CE with one shared attention map (SPEC 5 + 6)."""

    name = "tsman_loss"
    modes = ("fwd", "bwd", "fwdbwd")
    variants = tuple(SMOOTHING)

    def inputs(self, size, device, dtype, g) -> dict:
        x = _two_streams(size, device, dtype, g, requires_grad=True)
        x["target"] = _target(size, device, g)
        return x

    def call(self, fn: Callable, x: dict, variant: str):
        out = fn(x["logits_a"], x["logits_b"], x["target"], reduction="mean", **SMOOTHING[variant])
        # the reference returns (loss, attention), the public op the loss alone
        return out[0] if isinstance(out, tuple) else out

    def grad_inputs(self, x: dict) -> List[torch.Tensor]:
        return [x["logits_a"], x["logits_b"]]


BENCHES = (LossAttention(), AttendedCrossEntropy(), TsmanLoss())


# ---- pytest-benchmark ------------------------------------------------------------------


def pytest_generate_tests(metafunc):
    pytest_support.parametrize(metafunc, BENCHES)


def test_tsman(benchmark, bench_case):
    pytest_support.run(benchmark, bench_case)
