"""Runs a chosen set of benchmarks side by side in one process and collects the rows.

For each op, size, variant and mode, every provider is first warmed up (the
first call's seconds are kept apart: that is where ``torch.compile`` compiles),
then timed round-robin — one call of each provider per round, the order
rotating every round — so a change of machine load during the group hits all
providers alike. Peak memory is measured afterwards with one more call each.
"""
from __future__ import annotations

import gc
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from . import measure
from .op_bench import OpBench, ProviderUnavailable, Workload

__all__ = ["Row", "Skip", "RunResult", "run_benchmarks"]


@dataclass
class Row:
    """One provider's numbers for one op, variant, size and mode (times in seconds)."""

    family: str
    op: str
    variant: str
    size: str
    voxels: int
    paper: bool
    mode: str
    provider: str
    device: str
    dtype: str
    repeats: int
    median_s: float
    q25_s: float
    q75_s: float
    min_s: float
    max_s: float
    warmup_s: float
    peak_bytes: Optional[int] = None
    memory_method: str = ""
    min_bytes: Optional[int] = None
    grad_bytes: int = 0
    speedup_eager: Optional[float] = None
    speedup_compile: Optional[float] = None
    gbps: Optional[float] = None
    pct_copy: Optional[float] = None
    target: str = ""


@dataclass
class Skip:
    """Something that was not measured, and why."""

    op: str
    provider: str  # "" when the whole op was skipped
    where: str  # the variant, size and mode ("" when all)
    reason: str


@dataclass
class RunResult:
    machine: Dict[str, str]
    settings: Dict[str, str]
    copy_bps: float = 0.0  # the higher of the two measurements: what the machine can do
    copy_timing: Optional[measure.Timing] = None  # of the measurement at the start
    copy_bps_start: float = 0.0
    copy_bps_end: float = 0.0
    rows: List[Row] = field(default_factory=list)
    skips: List[Skip] = field(default_factory=list)
    load_start: Optional[Sequence[float]] = None
    load_end: Optional[Sequence[float]] = None
    interrupted: bool = False
    seconds: float = 0.0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _measure_group(
    bench: OpBench,
    x: dict,
    size,
    variant: str,
    mode: str,
    providers: Sequence[str],
    *,
    device: torch.device,
    dtype: torch.dtype,
    repeats: int,
    warmup: int,
    memory: bool,
    result: RunResult,
    log: Callable[[str], None],
) -> None:
    where = " ".join(p for p in (bench.name, variant, size.label, mode) if p)
    works: Dict[str, Workload] = {}
    first: Dict[str, float] = {}
    for provider in providers:
        try:
            work = bench.workload(provider, variant, mode, x, device)
            first[provider] = measure.time_call(work.run, work.setup, device)
            for _ in range(warmup - 1):
                measure.time_call(work.run, work.setup, device)
        except ProviderUnavailable as exc:
            result.skips.append(Skip(bench.name, provider, where, str(exc)))
            continue
        except Exception as exc:  # a provider that fails must not end the whole run
            result.skips.append(Skip(bench.name, provider, where, f"failed: {_first_line(exc)}"))
            log(f"  {provider}: failed: {_first_line(exc)}")
            continue
        works[provider] = work
    if not works:
        return

    times: Dict[str, List[float]] = {p: [] for p in works}
    names = list(works)
    for r in range(repeats):
        k = r % len(names)
        for provider in names[k:] + names[:k]:
            work = works[provider]
            times[provider].append(measure.time_call(work.run, work.setup, device))

    min_bytes = bench.min_bytes(x, mode)
    grad_bytes = bench.grad_bytes(x) if mode != "fwd" else 0
    group: List[Row] = []
    for provider in names:
        timing = measure.Timing(tuple(times[provider]))
        peak, method = None, ""
        if memory:
            try:
                peak, method = measure.peak_extra_bytes(works[provider].run, works[provider].setup, device, bench.memory_method)
            except Exception as exc:
                result.skips.append(Skip(bench.name, provider, where, f"memory measurement failed: {_first_line(exc)}"))
        row = Row(
            family=bench.family, op=bench.name, variant=variant, size=size.label, voxels=size.voxels,
            paper=size.paper, mode=mode, provider=provider, device=str(device),
            dtype=str(dtype).replace("torch.", ""), repeats=repeats, median_s=timing.median,
            q25_s=timing.q25, q75_s=timing.q75, min_s=timing.min, max_s=timing.max,
            warmup_s=first[provider], peak_bytes=peak, memory_method=method,
            min_bytes=min_bytes, grad_bytes=grad_bytes,
        )
        note, bandwidth_applies = bench.work_note(provider, mode)
        if note:
            row.target = note
        if not bandwidth_applies:
            row.min_bytes = None
        if row.min_bytes is not None:
            row.gbps = row.min_bytes / row.median_s / 1e9
        group.append(row)

    by_provider = {r.provider: r for r in group}
    for row in group:
        if bench.baseline in by_provider:
            row.speedup_eager = by_provider[bench.baseline].median_s / row.median_s
        if "compile" in by_provider:
            row.speedup_compile = by_provider["compile"].median_s / row.median_s
        log(
            f"  {row.provider:>12}: median {row.median_s * 1e3:9.3f} ms"
            + (f"  x{row.speedup_eager:.2f} vs {bench.baseline}" if row.speedup_eager else "")
            + (f"  first call {row.warmup_s:.2f} s" if row.provider == "compile" else "")
        )
    result.rows.extend(group)


def run_benchmarks(
    benches: Sequence[OpBench],
    *,
    sizes: str = "paper",
    modes: Sequence[str] = ("fwd", "bwd", "fwdbwd"),
    providers: Optional[Sequence[str]] = None,
    device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float32,
    repeats: int = 10,
    warmup: int = 2,
    memory: bool = True,
    copy_bytes: int = 256 * 2**20,
    log: Callable[[str], None] = _stderr,
) -> RunResult:
    """Measures ``benches`` and returns every row (targets are judged by the caller).

    Args:
        benches: the op benchmarks to run, in order.
        sizes: "smoke", "paper" or "sweep".
        modes: the modes to run where an op has them ("fwd", "bwd", "fwdbwd").
        providers: provider names to run (None: each op's own list).
        device, dtype: where and in which floating dtype the inputs are made.
        repeats: timed calls per provider; warmup: untimed calls before them (>= 1).
        memory: also measure the peak extra memory of each provider.
        copy_bytes: size of each buffer of the copy-bandwidth measurement.
        log: where progress lines go (stderr by default).

    Returns:
        A RunResult; on Ctrl-C, the rows measured so far with ``interrupted=True``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if warmup < 1:
        raise ValueError(f"warmup must be at least 1 (the first call is never timed), got {warmup}")
    start = time.perf_counter()
    load_start = measure.load_average()
    result = RunResult(
        load_start=load_start,
        machine=measure.machine_info(device),
        settings={
            "sizes": sizes, "modes": ",".join(modes), "providers": ",".join(providers) if providers else "all",
            "dtype": str(dtype).replace("torch.", ""), "repeats": str(repeats), "warmup calls": str(warmup),
            "copy buffer": f"{copy_bytes / 2**20:g} MiB",
        },
    )
    log(" | ".join(f"{k}: {v}" for k, v in result.machine.items()))
    try:
        result.copy_bps_start, result.copy_timing = measure.copy_bandwidth(device, copy_bytes)
        log(f"copy bandwidth ({copy_bytes / 2**20:.0f} MiB buffers): {result.copy_bps_start / 1e9:.2f} GB/s")
        for bench in benches:
            chosen = [p for p in bench.providers if providers is None or p in providers]
            bench_modes = [m for m in bench.modes if m in modes]
            if not chosen:
                result.skips.append(Skip(bench.name, "", "", f"none of its providers ({', '.join(bench.providers)}) was selected"))
                continue
            if not bench_modes:
                result.skips.append(Skip(bench.name, "", "", f"none of its modes ({', '.join(bench.modes)}) was selected"))
                continue
            for size in bench.sizes(sizes):
                gc.collect()
                x = bench.inputs(size, device, dtype, torch.Generator().manual_seed(0))
                for variant in bench.variants:
                    for mode in bench_modes:
                        log(" ".join(p for p in (bench.name, variant, size.label, mode) if p))
                        _measure_group(
                            bench, x, size, variant, mode, chosen, device=device, dtype=dtype,
                            repeats=repeats, warmup=warmup, memory=memory, result=result, log=log,
                        )
                del x
    except KeyboardInterrupt:
        result.interrupted = True
        log("interrupted: reporting the rows measured so far")
    # Measured again at the end: on a shared machine one measurement can land in
    # a busy moment; the higher of the two is what the hardware can do.
    if not result.interrupted:
        result.copy_bps_end, _ = measure.copy_bandwidth(device, copy_bytes)
        log(f"copy bandwidth at the end: {result.copy_bps_end / 1e9:.2f} GB/s")
    result.copy_bps = max(result.copy_bps_start, result.copy_bps_end)
    if result.copy_bps:
        for row in result.rows:
            if row.gbps is not None:
                row.pct_copy = 100.0 * row.gbps * 1e9 / result.copy_bps
    result.load_end = measure.load_average()
    result.seconds = time.perf_counter() - start
    return result
