"""The implementations a benchmark compares ("providers"), and when each can run.

* ``reference``: the eager PyTorch reference of the op (``pyseg_noise.ops.reference``,
  the executable form of SPEC.md) — the "eager" baseline.
* ``compile``: ``torch.compile(reference)``, default mode, static shapes; compiled and
  warmed up before any timed call (the first call's seconds are reported apart).
* ``cpu``: the public op with ``backend="cpu"`` (fused C++ kernels), on CPU tensors.
* ``triton``: the public op with ``backend="triton"`` (Triton kernels), on CUDA tensors.

Some benchmarks add their own (``foreach_lerp`` for the EMA, ``medpy`` for the
metrics); see each ``bench_*.py``.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

__all__ = ["STANDARD", "FUSED", "fused_problem", "compiled", "raise_recompile_limit"]

STANDARD = ("reference", "compile", "cpu", "triton")
#: Providers that are this library's own kernels (the targets apply to them).
FUSED = ("cpu", "triton")

_COMPILED: Dict[Callable, Callable] = {}


def raise_recompile_limit(limit: int = 64) -> None:
    """One reference function is compiled once per shape (a sweep has several) and
    per grad mode; Dynamo's default limit of 8 graphs per function would make it
    fall back to eager silently in a long run."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name) and getattr(cfg, name) < limit:
            setattr(cfg, name, limit)


def compiled(fn: Callable) -> Callable:
    """``torch.compile(fn, dynamic=False)``, one wrapper per function for the whole run.

    Static shapes: each size gets the code specialised to it, the best case for
    ``torch.compile`` and what a training loop with fixed patches gets.
    """
    if fn not in _COMPILED:
        raise_recompile_limit()
        _COMPILED[fn] = torch.compile(fn, dynamic=False)
    return _COMPILED[fn]


def fused_problem(provider: str, op: str, device: torch.device) -> Optional[str]:
    """Why the fused ``provider`` cannot run ``op`` on ``device`` (None when it can)."""
    from pyseg_noise.ops import HAS_CPU_EXTENSION

    if provider == "cpu":
        if device.type != "cpu":
            return "the cpu provider runs on CPU tensors (use --device cpu)"
        if not HAS_CPU_EXTENSION:
            return "the C++ extension pyseg_noise._C is not built"
        return None
    if provider == "triton":
        if device.type != "cuda":
            return "the triton provider needs CUDA tensors (no GPU here, or --device cpu)"
        try:
            from pyseg_noise.kernels import IMPLS, TRITON_ERROR
        except ImportError as exc:
            return f"pyseg_noise.kernels cannot be imported: {exc}"
        if op not in IMPLS:
            return TRITON_ERROR or f"no Triton kernel is registered for {op}"
        return None
    raise ValueError(f"fused_problem: provider must be one of {FUSED}, got {provider!r}")
