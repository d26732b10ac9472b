"""Benchmarks of ``pyseg_noise.metrics`` against ``medpy.metric.binary``.

Both compute the same numbers (the metrics' tests hold them to medpy's); this
measures the cost. Paper size: one 112x112x80 mask pair (an LA crop): the
reference an ellipsoid like a left atrium, the prediction the same ellipsoid
shifted by two voxels, slightly larger, plus a small false-positive blob. The
sweep runs the same shapes over the volume sizes of the other benchmarks
(the ellipsoid scales with the volume). Memory is counted with tracemalloc
(numpy buffers). ``surface_distance_metrics`` (asd, assd, hd, hd95 from one pair
of distance transforms) is compared with medpy's four separate calls.
"""
from __future__ import annotations

import math
from typing import Callable, List

import numpy as np
import torch

from . import pytest_support
from .op_bench import OpBench, ProviderUnavailable
from .sizes import SMOKE_VOLUME, SWEEP_VOLUMES, Size

__all__ = ["BENCHES", "mask_pair"]

PAPER_VOLUME = (112, 112, 80)
MEDPY_NAMES = {"dice": "dc", "jaccard": "jc", "asd": "asd", "assd": "assd", "hd": "hd", "hd95": "hd95"}


def mask_pair(shape) -> tuple:
    """(prediction, reference) boolean masks of ``shape`` (3 ints), described in the module doc."""
    grid = np.indices(shape, dtype=np.float64)
    centre = [s / 2 for s in shape]
    radii = [0.3 * s for s in shape]

    def ellipsoid(shift, scale):
        r2 = sum(((g - c - d) / (r * scale)) ** 2 for g, c, d, r in zip(grid, centre, shift, radii))
        return r2 <= 1.0

    reference = ellipsoid((0, 0, 0), 1.0)
    prediction = ellipsoid((2, 2, 0), 1.05)
    blob = [int(0.85 * s) for s in shape]
    rb = max(1.0, 0.05 * min(shape))
    prediction |= sum((g - b) ** 2 for g, b in zip(grid, blob)) <= rb**2
    return prediction, reference


def _medpy_all(prediction, reference):
    from medpy.metric import binary

    return {name: getattr(binary, name)(prediction, reference) for name in ("asd", "assd", "hd", "hd95")}


class Metric(OpBench):
    """One metric of ``pyseg_noise.metrics`` against its medpy twin."""

    family = "metrics"
    providers = ("medpy", "pyseg_noise")
    baseline = "medpy"
    memory_method = "tracemalloc"

    def __init__(self, name: str):
        self.name = name

    def public_fn(self) -> Callable:
        import pyseg_noise.metrics as metrics

        return getattr(metrics, self.name)

    def sizes(self, which: str) -> List[Size]:
        volumes = {"smoke": [SMOKE_VOLUME], "paper": [PAPER_VOLUME], "sweep": list(SWEEP_VOLUMES)}
        if which not in volumes:
            raise ValueError(f"sizes must be one of {tuple(volumes)}, got {which!r}")
        return [
            Size("x".join(map(str, v)) + " masks", {"S": tuple(v)}, math.prod(v), paper=tuple(v) == PAPER_VOLUME)
            for v in volumes[which]
        ]

    def inputs(self, size, device, dtype, g) -> dict:
        prediction, reference = mask_pair(size.dims["S"])
        return {"prediction": prediction, "reference": reference}

    def call(self, fn: Callable, x: dict, variant: str):
        return fn(x["prediction"], x["reference"])

    def implementation(self, provider: str, variant: str, device: torch.device) -> Callable[[dict], object]:
        if provider == "pyseg_noise":
            fn = self.public_fn()
        elif provider == "medpy":
            try:
                from medpy.metric import binary
            except ImportError as exc:
                raise ProviderUnavailable(f"medpy is not installed ({exc})") from exc
            fn = _medpy_all if self.name == "surface_distance_metrics" else getattr(binary, MEDPY_NAMES[self.name])
        else:
            raise ProviderUnavailable(f"{self.name} has no provider {provider!r} (it has medpy, pyseg_noise)")
        return lambda x: self.call(fn, x, variant)


BENCHES = tuple(Metric(n) for n in ("dice", "jaccard", "asd", "assd", "hd", "hd95", "surface_distance_metrics"))


# ---- pytest-benchmark ------------------------------------------------------------------


def pytest_generate_tests(metafunc):
    pytest_support.parametrize(metafunc, BENCHES)


def test_metrics(benchmark, bench_case):
    pytest_support.run(benchmark, bench_case)
