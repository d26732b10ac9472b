"""Whole training steps, timed side by side with the plain eager fp32 loop (``python -m benchmarks --train``).

In a PINT step the fused loss is ~0.1 % of the time; the teacher's M passes and the
student's forward and backward are the rest. This benchmark times the step the Trainer
runs (:func:`pyseg_noise.training.trainer.run_step`: the method's ``train_step`` under
autocast, backward, optimizer, ``after_step``) for each method and size, in variants
that differ only in the speed settings of :mod:`pyseg_noise.training.speed`:

=========  ===========================================================================
variant    settings
=========  ===========================================================================
``eager``  the baseline: ``teacher_amp: off``, ``channels_last: off``, ``compile: off``,
           ``amp: off`` (plain eager fp32, as before the speed work)
``fast``   the defaults (``auto``): what a user gets
``compile``the defaults plus ``compile: on`` (compiled and warmed up untimed)
=========  ===========================================================================

The variants are timed round-robin, in one process, on the same batches and the same
initial weights; each round runs every variant in its own allocator state (its
:meth:`~pyseg_noise.training.speed.SpeedPlan.training` context: the ``eager`` loop with
glibc's steady-state settings, the default one with freed memory kept in the heap), one
untimed step to settle it, then one timed step; the report gives the median and IQR of the step,
its ratio to ``eager``, the peak memory a step allocates above what was allocated before it
(CPU: the profiler's allocator events; CUDA: the allocator's peak), and the mean time of each
part of the step (:mod:`pyseg_noise.training.step_parts`).
"""
from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from pyseg_noise.reproduce.scales import SCALES, TSMAN_SCALES
from pyseg_noise.training.config import config_from_dict
from pyseg_noise.training.method import Batch
from pyseg_noise.training.step_parts import record_parts
from pyseg_noise.training.trainer import _LossWatch, _build_optimizer, build_method, run_step

from .measure import Timing, peak_extra_bytes, synchronize, time_call

__all__ = ["TRAIN_METHODS", "TRAIN_SIZES", "VARIANTS", "TRAIN_TARGETS", "TrainRow", "run_train_benchmarks",
           "train_markdown", "train_target_lines"]

TRAIN_METHODS = ("vnet", "pint", "tsman")
TRAIN_SIZES = ("smoke", "cpu", "paper")
VARIANTS = {
    "eager": {"teacher_amp": "off", "channels_last": "off", "compile": "off", "amp": "off", "cpu_allocator": "system"},
    "fast": {},
    "compile": {"compile": "on"},
}
#: step time of the default ("fast") loop / the eager fp32 loop, at most (issue: training speed)
TRAIN_TARGETS = {"pint": 0.55, "vnet": 0.8, "tsman": 0.7}
#: the parts of a step, in report order; "student forward" is train_step less the inner parts
PARTS = ("student_forward", "teacher_passes", "loss", "backward", "optimizer", "after_step")


@dataclass
class TrainRow:
    """One method x size x variant."""

    method: str
    size: str
    variant: str
    shape: str
    timing: Timing
    peak_bytes: Optional[int] = None
    parts: Dict[str, float] = field(default_factory=dict)
    speed: str = ""
    ratio: Optional[float] = None


def _size_config(method: str, size: str, device: torch.device) -> dict:
    """The config values of ``method`` at ``size`` (cpu: the reproduction's scale; paper: V-Net 16 at 112x112x80)."""
    if method == "tsman":
        s = TSMAN_SCALES["cpu" if size == "cpu" else "paper" if size == "paper" else "smoke"]
        batch = s.batch_size if size != "paper" or device.type == "cuda" else 2
        return {"method": "tsman", "batch_size": batch, "data": {"crop_size": list(s.crop_size)},
                "optim": {"lr": s.lr, "lr_policy": "poly"}, "method_options": s.method_overrides(),
                "iterations": 100}
    if size == "paper":
        crop, n_filters, batch = (112, 112, 80), 16, 2 if device.type == "cpu" else 4
    else:
        s = SCALES[size]
        crop, n_filters, batch = s.crop_size, s.n_filters, s.batch_size
    return {"method": method, "batch_size": batch, "data": {"crop_size": list(crop)},
            "model": {"n_filters": n_filters}, "iterations": 100}


def _batch(cfg, device: torch.device, index: int) -> Batch:
    g = torch.Generator().manual_seed(1000 + index)
    b, crop = cfg.batch_size, tuple(cfg.data.crop_size)
    image = torch.randn((b, cfg.data.in_channels) + crop, generator=g)
    # a ball of foreground per sample, so every class occurs
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) - n / 2 for n in crop], indexing="ij"))
    radius = min(crop) / 4
    label = (grid.square().sum(0).sqrt() < radius).long().expand(b, *crop).clone()
    if cfg.data.num_classes > 2:
        label[:, : crop[0] // 4] = cfg.data.num_classes - 1
    return Batch(image=image.to(device), label=label.to(device), cases=[f"b{index}_{i}" for i in range(b)],
                 positions=[index * b + i for i in range(b)], seed=cfg.seed)


class _Loop:
    """A method, its optimizer and the Trainer's step function, for one variant."""

    def __init__(self, values: dict, device: torch.device, batches: int):
        self.config = config_from_dict(values)
        self.method = build_method(self.config, device)
        self.optimizer = _build_optimizer(self.config, self.method.param_groups())
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.amp = self.method.speed.student_dtype
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.watch = _LossWatch(device, False, self.config.method, run_dir=None)
        self.batches = [_batch(self.config, device, i) for i in range(batches)]
        self.step_index = 0
        total = self.method.total_iterations()
        # a step of the method's main stage: PINT's pixel phase, TSMAN's attended fine-tuning
        self.iteration = total - 1 if self.config.method == "tsman" else 1
        self.total = total

    def step(self, _=None):
        batch = self.batches[self.step_index % len(self.batches)]
        self.step_index += 1
        image = self.method.speed.prepare_input(batch.image, self.method.modules())
        batch = Batch(image=image, label=batch.label, cases=batch.cases, positions=batch.positions, seed=batch.seed)
        return run_step(self.method, self.optimizer, self.scaler, self.amp, self.params, batch, self.iteration,
                        self.watch, self.total)["loss"]


def run_train_benchmarks(methods: Sequence[str], sizes: Sequence[str], *, variants: Sequence[str] = ("eager", "fast"),
                         device: Optional[torch.device] = None, repeats: int = 5, warmup: int = 2,
                         memory: bool = True, log=print) -> List[TrainRow]:
    """Time whole training steps; see the module docstring. Returns one row per method x size x variant."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    for name, allowed in (("methods", TRAIN_METHODS), ("sizes", TRAIN_SIZES), ("variants", tuple(VARIANTS))):
        given = {"methods": methods, "sizes": sizes, "variants": variants}[name]
        bad = [v for v in given if v not in allowed]
        if bad or not given:
            raise ValueError(f"run_train_benchmarks: {name} must be a non-empty subset of {allowed}, got {list(given)}")
    if "eager" not in variants:
        variants = ("eager",) + tuple(variants)
    rows: List[TrainRow] = []
    for size in sizes:
        for method in methods:
            base = _size_config(method, size, device)
            base["device"] = device.type
            loops = {}
            for v in variants:
                values = copy.deepcopy(base)
                values.update(VARIANTS[v])
                loops[v] = _Loop(values, device, batches=max(2, repeats))
            cfg = loops["eager"].config
            shape = f"B{cfg.batch_size} {'x'.join(map(str, cfg.data.crop_size))}"
            log(f"[train bench] {method} {size} ({shape}): warm-up")
            for loop in loops.values():
                with loop.method.speed.training():
                    for _ in range(warmup):
                        loop.step()
            times: Dict[str, List[float]] = {v: [] for v in loops}
            parts: Dict[str, Dict[str, float]] = {v: {} for v in loops}
            for r in range(repeats):
                for v, loop in loops.items():
                    # each variant in its own allocator state: one untimed step settles it (the heap
                    # cache grows to a step's size; the system allocator starts trimmed), one is timed
                    with loop.method.speed.training():
                        loop.step()
                        with record_parts(sync_cuda=device.type == "cuda") as seconds:
                            times[v].append(time_call(loop.step, None, device))
                    for k, s in seconds.items():
                        parts[v][k] = parts[v].get(k, 0.0) + s / repeats
            eager_median = statistics.median(times["eager"])
            for v, loop in loops.items():
                timing = Timing(tuple(times[v]))
                peak = None
                if memory:
                    synchronize(device)
                    with loop.method.speed.training():
                        peak, _ = peak_extra_bytes(loop.step, None, device)
                p = parts[v]
                inner = sum(p.get(k, 0.0) for k in ("teacher_passes", "loss", "student_forward"))
                if "student_forward" not in p and "train_step" in p:
                    p["student_forward"] = max(p["train_step"] - inner, 0.0)
                rows.append(TrainRow(method, size, v, shape, timing, peak, {k: p.get(k, 0.0) for k in PARTS},
                                     loop.method.speed.describe(), timing.median / eager_median))
                log(f"[train bench] {method} {size} {v}: {timing.median * 1e3:.0f} ms "
                    f"({timing.median / eager_median:.2f}x eager)")
            del loops
    return rows


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}"


def train_markdown(rows: Sequence[TrainRow]) -> str:
    """The report: one line per method x size x variant, parts as % of the step."""
    head = ("| method | size | variant | step ms (median) | IQR ms | × eager | peak MiB | "
            + " | ".join(p.replace("_", " ") for p in PARTS) + " |")
    lines = [head, "|" + "---|" * (7 + len(PARTS))]
    for r in rows:
        t = r.timing
        share = [f"{100 * r.parts.get(p, 0.0) / t.median:.1f} %" for p in PARTS]
        peak = "" if r.peak_bytes is None else f"{r.peak_bytes / 2**20:.0f}"
        lines.append(f"| {r.method} | {r.size} ({r.shape}) | {r.variant} | {_ms(t.median)} | "
                     f"{_ms(t.q25)}–{_ms(t.q75)} | {r.ratio:.2f} | {peak} | " + " | ".join(share) + " |")
    return "\n".join(lines)


def train_target_lines(rows: Sequence[TrainRow]) -> List[str]:
    """``[met] pint step at cpu size: 0.52x eager (target <= 0.55x)`` for each default-loop row."""
    out = []
    for r in rows:
        if r.variant != "fast" or r.method not in TRAIN_TARGETS:
            continue
        target = TRAIN_TARGETS[r.method]
        verdict = "met" if r.ratio <= target else "missed"
        out.append(f"[{verdict}] {r.method} step at {r.size} size ({r.shape}): {r.ratio:.2f}x the eager fp32 loop "
                   f"(target <= {target}x)")
    return out
