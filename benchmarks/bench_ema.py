"""Benchmark of the mean teacher's EMA update (SPEC 7) on real parameter lists.

Sizes: the parameters of ``VNet(1, 2)`` (PINT's backbone, ~9.45 M in 118
tensors) and ``DenseVoxNet(1, 2)`` (TSMAN's sub-network, ~1.7 M in 118 tensors);
the smoke size is a small list of conv-like shapes. Providers:

* ``reference``: the per-parameter Python loop of ``pyseg_noise.ops.reference``
  (``ema.mul_(d).add_(p * (1 - d))`` for each tensor) — the "eager" baseline;
* ``foreach_lerp``: ``torch._foreach_lerp_(ema, params, 1 - decay)``, what
  ``torch.optim.swa_utils`` and timm's ModelEmaV3 use;
* ``compile``, ``cpu``, ``triton``: as for every op (``ema_update_`` with
  ``backend=``).

Skipped with a message while ``pyseg_noise.ops.ema_update_`` does not exist.
"""
from __future__ import annotations

from typing import Callable, List

import torch

from . import pytest_support
from .op_bench import OpBench
from .sizes import Size

__all__ = ["BENCHES", "DECAY"]

DECAY = 0.99  # PINT's EMA decay

#: A small conv net's parameter shapes: the smoke size.
SMOKE_SHAPES = [(16, 1, 3, 3, 3), (16,), (16,), (16,), (32, 16, 2, 2, 2), (32,), (2, 32, 1, 1, 1), (2,)]


def _model_params(name: str) -> List[torch.Tensor]:
    from pyseg_noise.models import DenseVoxNet, VNet

    # Fixed initial weights without touching the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = VNet(1, 2) if name == "VNet" else DenseVoxNet(1, 2)
    return [p.detach() for p in model.parameters()]


def _size(name: str, shapes) -> Size:
    numel = sum(int(torch.Size(s).numel()) for s in shapes)
    count = f"{numel / 1e6:.2f} M" if numel >= 10**5 else str(numel)
    label = f"{name} ({count} params, {len(shapes)} tensors)"
    return Size(label, {"model": name, "shapes": [tuple(s) for s in shapes]}, numel, paper=name != "smoke")


class EmaUpdate(OpBench):
    """In place ``ema <- decay * ema + (1 - decay) * param`` over a whole parameter list."""

    name = "ema_update_"
    family = "ema"
    providers = ("reference", "compile", "foreach_lerp", "cpu", "triton")

    def sizes(self, which: str) -> List[Size]:
        if which == "smoke":
            return [_size("smoke", SMOKE_SHAPES)]
        if which in ("paper", "sweep"):  # the sweep is over models: these two
            return [_size(m, [tuple(p.shape) for p in _model_params(m)]) for m in ("VNet", "DenseVoxNet")]
        raise ValueError(f"sizes must be 'smoke', 'paper' or 'sweep', got {which!r}")

    def inputs(self, size, device, dtype, g) -> dict:
        if size.dims["model"] == "smoke":
            params = [torch.randn(s, generator=g) for s in size.dims["shapes"]]
        else:
            params = _model_params(size.dims["model"])
        src = [p.to(device=device, dtype=dtype) for p in params]
        ema = [(p + 0.01 * torch.randn(p.shape, generator=g)).to(device=device, dtype=dtype) for p in params]
        return {"ema": ema, "src": src}

    def call(self, fn: Callable, x: dict, variant: str):
        return fn(x["ema"], x["src"], DECAY)

    def extra_implementation(self, provider: str, variant: str) -> Callable[[dict], None]:
        if provider == "foreach_lerp":
            return lambda x: torch._foreach_lerp_(x["ema"], x["src"], 1.0 - DECAY)
        return super().extra_implementation(provider, variant)


BENCHES = (EmaUpdate(),)


# ---- pytest-benchmark ------------------------------------------------------------------


def pytest_generate_tests(metafunc):
    pytest_support.parametrize(metafunc, BENCHES)


def test_ema(benchmark, bench_case):
    pytest_support.run(benchmark, bench_case)
