"""The performance targets of issue 5, judged on a run's rows ("met" / "missed").

All targets are for fp32 inputs and the fused providers (``cpu``, ``triton``);
forward+backward unless the op has no backward. "Paper size" is the size a
paper trains with (see ``sizes.py``); a target whose rows were not measured
(another size set, a provider left out) is reported as "not measured".

1. ``pint_pixel_loss`` at the paper size: >= 5x faster than eager, faster than
   torch.compile, peak extra memory <= 1.5x the logits' gradient.
2. ``pint_image_loss`` and ``teacher_uncertainty`` at the paper size: >= 4x eager.
3. ``tsman_loss`` (spatial_dims 2 and 3) at the paper size: >= 20x eager
   (the dense ``F.conv3d`` reference).
4. ``ema_update_`` on each model: within 10% of ``torch._foreach_lerp_`` and
   within 2x of the copy-bandwidth floor (its minimum bytes / copy bandwidth).
5. Every fused op with a bandwidth figure, at the largest size of the run
   (judged when the run reaches the paper size, i.e. not in smoke runs):
   >= 30% of the copy bandwidth measured in the same run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .providers import FUSED

__all__ = ["Target", "TargetResult", "TARGETS", "evaluate"]


@dataclass(frozen=True)
class Target:
    """A target: which rows it judges and how.

    ``check(row, context)`` returns (met, the measured value as text), or None
    when the row lacks what the target needs (e.g. torch.compile was not run).
    """

    name: str
    short: str  # what the row's "target" cell says, e.g. ">=5x eager"
    applies: Callable[[object], bool]
    check: Callable[[object, "Context"], Optional[Tuple[bool, str]]]
    largest_only: bool = False  # judge only the largest size of each op/variant/mode


@dataclass(frozen=True)
class TargetResult:
    target: str
    row: Optional[object]  # None: no row was measured for it
    met: Optional[bool]
    value: str

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "not measured"
        return "met" if self.met else "missed"


@dataclass
class Context:
    copy_bps: float
    rows: Sequence[object]

    def sibling(self, row, provider: str):
        """The row of ``provider`` measured in the same group as ``row``."""
        for r in self.rows:
            if (r.op, r.variant, r.size, r.mode, r.provider) == (row.op, row.variant, row.size, row.mode, provider):
                return r
        return None


def _fused(row) -> bool:
    return row.provider in FUSED


def _paper(op: str, mode: str, variant: Optional[str] = None) -> Callable[[object], bool]:
    return lambda r: _fused(r) and r.op == op and r.mode == mode and r.paper and (variant is None or r.variant == variant)


def _speedup_at_least(attr: str, factor: float, strict: bool = False):
    def check(row, ctx):
        value = getattr(row, attr)
        if value is None:
            return None
        met = value > factor if strict else value >= factor
        return met, f"{value:.2f}x"

    return check


def _memory_within(factor: float):
    def check(row, ctx):
        if row.peak_bytes is None or not row.grad_bytes:
            return None
        ratio = row.peak_bytes / row.grad_bytes
        return ratio <= factor, f"{ratio:.2f}x grad, {row.peak_bytes / 2**20:.1f} MiB"

    return check


def _near_lerp(row, ctx):
    lerp = ctx.sibling(row, "foreach_lerp")
    if lerp is None:
        return None
    ratio = row.median_s / lerp.median_s
    return ratio <= 1.10, f"{ratio:.2f}x foreach_lerp"


def _near_floor(row, ctx):
    if not row.min_bytes or not ctx.copy_bps:
        return None
    floor = row.min_bytes / ctx.copy_bps
    ratio = row.median_s / floor
    return ratio <= 2.0, f"{ratio:.2f}x the floor of {floor * 1e3:.2f} ms"


def _bandwidth_share(row, ctx):
    if not row.min_bytes or not ctx.copy_bps:
        return None
    pct = 100.0 * row.min_bytes / row.median_s / ctx.copy_bps
    return pct >= 30.0, f"{pct:.0f}% of copy"


TARGETS: List[Target] = [
    Target("pint_pixel_loss fwd+bwd >= 5x eager", ">=5x eager", _paper("pint_pixel_loss", "fwdbwd"), _speedup_at_least("speedup_eager", 5)),
    Target(
        "pint_pixel_loss fwd+bwd faster than torch.compile",
        ">1x compile",
        _paper("pint_pixel_loss", "fwdbwd"),
        _speedup_at_least("speedup_compile", 1.0, strict=True),
    ),
    Target("pint_pixel_loss fwd+bwd peak extra memory <= 1.5x logits grad", "mem <=1.5x grad", _paper("pint_pixel_loss", "fwdbwd"), _memory_within(1.5)),
    Target("pint_image_loss fwd+bwd >= 4x eager", ">=4x eager", _paper("pint_image_loss", "fwdbwd"), _speedup_at_least("speedup_eager", 4)),
    Target("teacher_uncertainty >= 4x eager", ">=4x eager", _paper("teacher_uncertainty", "fwd"), _speedup_at_least("speedup_eager", 4)),
    Target(
        "tsman_loss fwd+bwd spatial_dims=2 >= 20x eager",
        ">=20x eager",
        _paper("tsman_loss", "fwdbwd", "spatial_dims=2"),
        _speedup_at_least("speedup_eager", 20),
    ),
    Target(
        "tsman_loss fwd+bwd spatial_dims=3 >= 20x eager",
        ">=20x eager",
        _paper("tsman_loss", "fwdbwd", "spatial_dims=3"),
        _speedup_at_least("speedup_eager", 20),
    ),
    Target("ema_update_ within 10% of torch._foreach_lerp_", "<=1.1x lerp", _paper("ema_update_", "fwd"), _near_lerp),
    Target("ema_update_ within 2x of the copy-bandwidth floor", "<=2x floor", _paper("ema_update_", "fwd"), _near_floor),
    Target(
        "fused op >= 30% of copy bandwidth at the largest size",
        ">=30% copy",
        lambda r: _fused(r) and r.min_bytes is not None,
        _bandwidth_share,
        largest_only=True,
    ),
]


def _largest(rows: Sequence[object]) -> List[object]:
    """The row of the largest size of each op/variant/mode/provider, where that size is at
    least the paper's (a smoke run's largest size says nothing about bandwidth)."""
    best: Dict[tuple, object] = {}
    paper: Dict[tuple, int] = {}
    for r in rows:
        key = (r.op, r.variant, r.mode, r.provider)
        if key not in best or r.voxels > best[key].voxels:
            best[key] = r
        if r.paper:
            paper[key] = max(paper.get(key, 0), r.voxels)
    return [r for key, r in best.items() if key in paper and r.voxels >= paper[key]]


def evaluate(rows: Sequence[object], copy_bps: float, dtype: str = "float32") -> List[TargetResult]:
    """Judges every target on ``rows`` and writes each verdict into its rows' ``target``
    field ("met >=5x eager (6.10x)"; several joined by "; ").

    Args:
        rows: the run's rows (``runner.Row``), all providers of a group included.
        copy_bps: the copy bandwidth of the same run, bytes per second.
        dtype: the run's dtype; targets are judged for float32 only.

    Returns:
        One result per target and judged row, plus a "not measured" result for each
        target no row matched.
    """
    ctx = Context(copy_bps, rows)
    results: List[TargetResult] = []
    if dtype != "float32":
        return [TargetResult(t.name, None, None, f"targets are for float32; this run is {dtype}") for t in TARGETS]
    for target in TARGETS:
        pool = [r for r in rows if target.applies(r)]
        if target.largest_only:
            pool = _largest(pool)
        judged = False
        for row in pool:
            outcome = target.check(row, ctx)
            if outcome is None:
                continue
            met, value = outcome
            judged = True
            results.append(TargetResult(target.name, row, met, value))
            note = f"{'met' if met else 'missed'} {target.short} ({value})"
            row.target = note if not row.target else f"{row.target}; {note}"
        if not judged:
            results.append(TargetResult(target.name, None, None, "no measured row for it in this run"))
    return results
