"""Benchmarks of PINT's ops (SPEC 1-4) against eager PyTorch and torch.compile.

Paper size: B=4, C=2, 112x112x80 crops, M=4 teacher passes, fp32 (PINT §3),
int64 labels (what a DataLoader hands over), ``pseudo_label="soft"`` and
``reduction="mean"`` as in training.

Run with ``python -m benchmarks --ops pint`` (one report), or as pytest-benchmark
tests: ``python -m pytest benchmarks/bench_pint.py`` (smoke size; set
``PYSEG_BENCH_SIZES=paper`` or ``sweep`` for more).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch

from . import pytest_support
from .op_bench import OpBench
from .sizes import Size, volume_sizes

__all__ = ["BENCHES"]

PAPER = dict(B=4, C=2, paper_volume=(112, 112, 80))
PAPER_M = 4


def _logits(size: Size, device, dtype, g: torch.Generator, scale: float = 2.0) -> torch.Tensor:
    d = size.dims
    return (scale * torch.randn(d["B"], d["C"], *d["S"], generator=g)).to(device=device, dtype=dtype)


def _loss_inputs(size: Size, device, dtype, g) -> dict:
    d = size.dims
    return {
        "logits": _logits(size, device, dtype, g).requires_grad_(),
        "target": torch.randint(0, d["C"], (d["B"], *d["S"]), generator=g).to(device),
        "teacher_prob": torch.softmax(_logits(size, device, torch.float32, g), dim=1).to(dtype),
    }


class _PintBench(OpBench):
    family = "pint"

    def sizes(self, which: str) -> List[Size]:
        return volume_sizes(which, **PAPER)


class TeacherUncertainty(_PintBench):
    """SPEC 1: mean softmax of the M teacher passes and its entropy (no gradient)."""

    name = "teacher_uncertainty"

    def sizes(self, which: str) -> List[Size]:
        return volume_sizes(which, M=PAPER_M, **PAPER)

    def inputs(self, size, device, dtype, g) -> dict:
        passes = [_logits(size, device, dtype, g) for _ in range(size.dims["M"])]
        return {"teacher_logits": torch.stack(passes)}

    def call(self, fn: Callable, x: dict, variant: str):
        return fn(x["teacher_logits"])


def accumulate_reference(passes: List[torch.Tensor]):
    """Eager streaming form of SPEC 1, as the accumulator's own reference path computes
    it: a float32 running sum of softmaxes, then prob and entropy."""
    from pyseg_noise.ops import reference

    sum_dtype = torch.float64 if passes[0].dtype == torch.float64 else torch.float32
    total = torch.zeros(passes[0].shape, dtype=sum_dtype, device=passes[0].device)
    for logits in passes:
        total += torch.softmax(logits.to(sum_dtype), dim=1)
    prob = total / len(passes)
    return prob, reference.prob_entropy(prob)


def _accumulate_public(passes: List[torch.Tensor], *, backend: Optional[str] = None):
    from pyseg_noise.ops import TeacherUncertaintyAccumulator

    acc = TeacherUncertaintyAccumulator(backend=backend)
    for logits in passes:
        acc.add(logits)
    return acc.compute()


class TeacherUncertaintyStream(_PintBench):
    """SPEC 1 one pass at a time (``TeacherUncertaintyAccumulator``): M adds + compute."""

    name = "TeacherUncertaintyAccumulator"
    kernel = "softmax_accumulate_"

    def sizes(self, which: str) -> List[Size]:
        return volume_sizes(which, M=PAPER_M, **PAPER)

    def reference_fn(self) -> Callable:
        return accumulate_reference

    def public_fn(self) -> Callable:
        return _accumulate_public

    def inputs(self, size, device, dtype, g) -> dict:
        return {"passes": [_logits(size, device, dtype, g) for _ in range(size.dims["M"])]}

    def call(self, fn: Callable, x: dict, variant: str):
        return fn(x["passes"])


class PintPixelLoss(_PintBench):
    """SPEC 2: alpha * CE + (1 - alpha) * MSE per voxel, mean over voxels."""

    name = "pint_pixel_loss"
    modes = ("fwd", "bwd", "fwdbwd")
    variants = ("soft",)

    def inputs(self, size, device, dtype, g) -> dict:
        return _loss_inputs(size, device, dtype, g)

    def call(self, fn: Callable, x: dict, variant: str):
        return fn(x["logits"], x["target"], x["teacher_prob"], pseudo_label=variant)

    def grad_inputs(self, x: dict) -> List[torch.Tensor]:
        return [x["logits"]]

    def work_note(self, provider: str, mode: str) -> Tuple[str, bool]:
        # The C++ op computes the gradient in its forward when the logits require grad
        # (pint_pixel_loss_with_grad): the fwd row does the backward's work too, and the bwd
        # row only scales that gradient (nothing for the usual upstream 1.0), so a bandwidth
        # from the backward's minimum traffic would be meaningless for it.
        if provider == "cpu" and mode == "fwd":
            return "fwd includes the gradient (computed in the forward)", True
        if provider == "cpu" and mode == "bwd":
            return "bwd only scales the gradient made in the forward: no bandwidth", False
        return "", True


class SliceUncertainty(_PintBench):
    """SPEC 3: mean entropy of each slice along the last spatial axis."""

    name = "slice_uncertainty"

    def inputs(self, size, device, dtype, g) -> dict:
        d = size.dims
        entropy = torch.rand(d["B"], *d["S"], generator=g) * 0.69
        return {"entropy": entropy.to(device=device, dtype=dtype)}

    def call(self, fn: Callable, x: dict, variant: str):
        return fn(x["entropy"], slice_dim=-1)


class PintImageLoss(PintPixelLoss):
    """SPEC 4: per-slice alpha_i * mean CE + (1 - alpha_i) * mean MSE."""

    name = "pint_image_loss"

    def call(self, fn: Callable, x: dict, variant: str):
        return fn(x["logits"], x["target"], x["teacher_prob"], pseudo_label=variant, slice_dim=-1)

    def work_note(self, provider: str, mode: str) -> Tuple[str, bool]:
        return "", True  # its forward and backward are separate passes (the per-slice weights come last)


BENCHES = (TeacherUncertainty(), TeacherUncertaintyStream(), PintPixelLoss(), SliceUncertainty(), PintImageLoss())


# ---- pytest-benchmark ------------------------------------------------------------------


def pytest_generate_tests(metafunc):
    pytest_support.parametrize(metafunc, BENCHES)


def test_pint(benchmark, bench_case):
    pytest_support.run(benchmark, bench_case)
