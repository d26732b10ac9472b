"""The bench_*.py files as pytest-benchmark tests (``python -m pytest benchmarks/``).

Each file's ``pytest_generate_tests`` calls :func:`parametrize`, which makes one
test per op x size x variant x mode x provider; :func:`run` warms the provider
up (``torch.compile`` compiles here, untimed) and hands the call to the
``benchmark`` fixture, so ``--benchmark-save`` / ``--benchmark-compare`` work.
pytest is imported only inside these functions: ``pyseg-noise bench`` imports
the bench files without it.

Environment:
    PYSEG_BENCH_SIZES  smoke (default) | paper | sweep
    PYSEG_BENCH_ROUNDS timed rounds per test (default 5)
    PYSEG_BENCH_DEVICE cpu | cuda (default: cuda when available)
"""
from __future__ import annotations

import os
from typing import NamedTuple, Sequence

import torch

from . import measure
from .op_bench import OpBench, ProviderUnavailable
from .sizes import Size

__all__ = ["BenchCase", "parametrize", "run"]

_inputs_cache: dict = {}


class BenchCase(NamedTuple):
    bench: OpBench
    size: Size
    variant: str
    mode: str
    provider: str

    @property
    def id(self) -> str:
        parts = [self.bench.name, self.variant, self.size.label, self.mode, self.provider]
        return "-".join(p.replace(" ", "_") for p in parts if p)


def _device() -> torch.device:
    name = os.environ.get("PYSEG_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def parametrize(metafunc, benches: Sequence[OpBench]) -> None:
    """Parametrizes the ``bench_case`` argument of a test over every case of ``benches``."""
    if "bench_case" not in metafunc.fixturenames:
        return
    which = os.environ.get("PYSEG_BENCH_SIZES", "smoke")
    cases = [
        BenchCase(bench, size, variant, mode, provider)
        for bench in benches
        for size in bench.sizes(which)
        for variant in bench.variants
        for mode in bench.modes
        for provider in bench.providers
    ]
    metafunc.parametrize("bench_case", cases, ids=[c.id for c in cases])


def _inputs(case: BenchCase, device: torch.device) -> dict:
    # One entry: consecutive tests share a size, and a paper-size input set is
    # hundreds of MB that should not pile up.
    key = (case.bench.name, case.size.label, str(device))
    if key not in _inputs_cache:
        _inputs_cache.clear()
        g = torch.Generator().manual_seed(0)
        _inputs_cache[key] = case.bench.inputs(case.size, device, torch.float32, g)
    return _inputs_cache[key]


def run(benchmark, case: BenchCase) -> None:
    """Times ``case`` with the pytest-benchmark fixture; skips with the reason when
    the provider is not available here."""
    import pytest

    device = _device()
    x = _inputs(case, device)
    try:
        work = case.bench.workload(case.provider, case.variant, case.mode, x, device)
    except ProviderUnavailable as exc:
        pytest.skip(str(exc))
    for _ in range(2):  # torch.compile compiles on the first call: never timed
        measure.time_call(work.run, work.setup, device)

    def timed(state):
        out = work.run(state)
        measure.synchronize(device)
        return out

    def setup():
        return ((work.setup() if work.setup is not None else None,), {})

    benchmark.extra_info.update(
        op=case.bench.name, size=case.size.label, voxels=case.size.voxels, mode=case.mode,
        provider=case.provider, min_bytes=case.bench.min_bytes(x, case.mode),
    )
    rounds = int(os.environ.get("PYSEG_BENCH_ROUNDS", "5"))
    benchmark.pedantic(timed, setup=setup, rounds=rounds, iterations=1)
