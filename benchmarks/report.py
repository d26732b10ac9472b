"""Writes a run as ``results.md`` (Markdown), ``results.csv`` and ``scaling.png``.

The Markdown report starts with the machine and the copy bandwidth, then one
table row per op x variant x size x mode x provider, then the targets with
their verdicts, what was not measured and why, and how everything was measured.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence

from . import measure
from .runner import Row, RunResult
from .targets import TargetResult

__all__ = ["TABLE_COLUMNS", "markdown_table", "skip_lines", "write_markdown", "write_csv", "write_plot", "write_all"]

TABLE_COLUMNS = (
    "op", "variant", "size", "mode", "provider", "median ms", "IQR ms", "min-max ms",
    "x eager", "x compile", "peak extra MiB", "min MiB", "GB/s", "% copy", "target",
)

_COLOURS = {
    "reference": "#7f7f7f", "compile": "#ff7f0e", "cpu": "#1f77b4", "triton": "#2ca02c",
    "foreach_lerp": "#9467bd", "medpy": "#7f7f7f", "pyseg_noise": "#1f77b4",
}
_STYLES = {"fwd": ":", "bwd": "--", "fwdbwd": "-"}


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    if ms <= 0:
        return "0"
    # three significant digits, never an exponent
    return f"{ms:.{2 - math.floor(math.log10(ms))}f}"


def _opt(value: Optional[float], fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _mib(nbytes: Optional[int]) -> str:
    if nbytes is None:
        return ""
    mib = nbytes / 2**20
    return f"{mib:.1f}" if mib >= 1 or mib == 0 else f"{mib:.3f}"


def _cells(row: Row) -> List[str]:
    return [
        row.op, row.variant, row.size, row.mode, row.provider, _ms(row.median_s),
        f"{_ms(row.q25_s)}-{_ms(row.q75_s)}", f"{_ms(row.min_s)}-{_ms(row.max_s)}",
        _opt(row.speedup_eager, ".2f"), _opt(row.speedup_compile, ".2f"), _mib(row.peak_bytes),
        _mib(row.min_bytes), _opt(row.gbps, ".2f"), _opt(row.pct_copy, ".0f"), row.target,
    ]


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a GitHub Markdown table with ``TABLE_COLUMNS``."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in _cells(row)) + " |")
    return "\n".join(lines)


def skip_lines(skips) -> List[str]:
    """One line per op, provider and reason (the cases it hit counted, not listed)."""
    grouped: Dict[tuple, List[str]] = OrderedDict()
    for s in skips:
        grouped.setdefault((s.op, s.provider, s.reason), []).append(s.where)
    lines = []
    for (op, provider, reason), wheres in grouped.items():
        who = f"{op} / {provider}" if provider else op
        cases = [w for w in wheres if w]
        where = f" ({cases[0]})" if len(cases) == 1 else (f" ({len(cases)} cases)" if cases else "")
        lines.append(f"{who}{where}: {reason}")
    return lines


def _targets_table(results: Iterable[TargetResult]) -> str:
    lines = ["| target | measured on | value | verdict |", "|---|---|---|---|"]
    for t in results:
        where = "" if t.row is None else f"{t.row.provider}, {' '.join(p for p in (t.row.variant, t.row.size, t.row.mode) if p)}"
        lines.append(f"| {t.target} | {where} | {t.value} | **{t.verdict}** |")
    return "\n".join(lines)


def _methods(result: RunResult) -> List[str]:
    used = sorted({r.memory_method for r in result.rows if r.memory_method})
    lines = [
        "- **Time**: `time.perf_counter` around one call (CUDA synchronised before and after), "
        "garbage collector off during the call. Each provider is called "
        f"{result.settings.get('warmup calls', '?')} times untimed first (torch.compile compiles there; "
        "its first call is in the CSV as `warmup_s`), then the providers of a row group are timed "
        "round-robin, one call each per round, the order rotating every round. "
        "Median and interquartile range of the timed calls.",
        "- **Modes**: `fwd` = the forward with autograd recording (as in training); `bwd` = "
        "`torch.autograd.grad` alone, the forward run untimed before each call; `fwdbwd` = both.",
        "- **x eager / x compile**: the median time of the eager reference (`reference`; "
        "`medpy` for the metrics) or of `torch.compile(reference)`, divided by this row's.",
        "- **Peak extra memory**: the most memory allocated during one call above what was "
        "allocated before it (inputs not counted; outputs, saved tensors and scratch counted). Method: "
        + "; ".join(f"{m} = {measure.MEMORY_METHODS[m]}" for m in used) + ".",
        "- **min MiB, GB/s, % copy**: the fewest bytes the op must read and write "
        "(`benchmarks/traffic.py`: each input read once, each output written once; a backward re-reads "
        "the inputs and writes the gradient), divided by the median time; and that bandwidth as a "
        "share of this run's copy bandwidth (above). An op whose inputs fit in the last-level "
        "cache (machine table) can beat the copy of buffers that do not: its inputs stay cached between calls.",
    ]
    return lines


def _busy_warning(result: RunResult) -> str:
    """A warning when other work shared the CPU: a 1-minute load average above half the
    cores before the run, or above this run's own threads plus half the cores at its end."""
    try:
        cores = int(result.machine.get("cores", "0"))
        threads = int(result.machine.get("torch threads", "0"))
    except ValueError:
        return ""
    start = result.load_start[0] if result.load_start else 0.0
    end = result.load_end[0] if result.load_end else 0.0
    if not cores or (start <= 0.5 * cores and end <= threads + 0.5 * cores):
        return ""
    return (
        f"**Warning**: the machine was busy during this run (1-minute load average {start:.1f} at the start, "
        f"{end:.1f} at the end, on {cores} cores): times are noisy, and a parallel region can wait "
        "milliseconds for a thread the scheduler gave to another process. Re-run on a quiet machine "
        "before quoting the numbers."
    )


def write_markdown(result: RunResult, targets: Sequence[TargetResult], path: str) -> None:
    parts = ["# pyseg_noise benchmarks", ""]
    if result.interrupted:
        parts += ["**Interrupted**: only the rows measured before Ctrl-C are here.", ""]
    busy = _busy_warning(result)
    if busy:
        parts += [busy, ""]
    parts += ["## Machine", "", "| | |", "|---|---|"]
    parts += [f"| {k} | {v} |" for k, v in result.machine.items()]
    if result.load_end is not None:
        parts.append("| load average at end (1/5/15 min) | " + " / ".join(f"{x:.2f}" for x in result.load_end) + " |")
    parts.append(f"| run time | {result.seconds:.0f} s |")
    parts += ["", "Settings: " + ", ".join(f"{k} = {v}" for k, v in result.settings.items()), ""]
    if result.copy_timing is not None:
        t = result.copy_timing
        parts += [
            f"Copy bandwidth: **{result.copy_bps / 1e9:.2f} GB/s** (`dst.copy_(src)` on two "
            f"{result.settings.get('copy buffer', '?')} buffers, read + write bytes, median of {len(t.times_s)} "
            f"copies; {result.copy_bps_start / 1e9:.2f} GB/s at the start of the run, "
            f"{result.copy_bps_end / 1e9:.2f} GB/s at the end, the higher one used for `% copy`).",
            "",
        ]
    parts += ["## Results", "", markdown_table(result.rows), ""]
    parts += ["## Targets", "", _targets_table(targets), ""]
    if result.skips:
        parts += ["## Not measured", ""]
        parts += [f"- {line}" for line in skip_lines(result.skips)]
        parts.append("")
    parts += ["## How it was measured", ""] + _methods(result) + [""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))


def write_csv(result: RunResult, path: str) -> None:
    """One line per row, every ``Row`` field (times in seconds, sizes in bytes) plus ``copy_gbps``."""
    names = [f.name for f in dataclasses.fields(Row)] + ["copy_gbps"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in result.rows:
            values = dataclasses.asdict(row)
            values["copy_gbps"] = result.copy_bps / 1e9
            writer.writerow({k: "" if v is None else v for k, v in values.items()})


def write_plot(result: RunResult, path: str) -> None:
    """Median time against voxels (log-log), one panel per op (and variant), one line per
    provider (colour) and mode (line style), interquartile range as error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    panels: Dict[tuple, List[Row]] = OrderedDict()
    for row in result.rows:
        panels.setdefault((row.op, row.variant), []).append(row)
    n = max(1, len(panels))
    ncols = min(3, n)
    nrows = (n + ncols - 1) // ncols
    fig = Figure(figsize=(5.2 * ncols, 3.9 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no rows were measured", ha="center", va="center")
        ax.set_axis_off()
    for i, ((op, variant), rows) in enumerate(panels.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        lines: Dict[tuple, List[Row]] = OrderedDict()
        for row in rows:
            lines.setdefault((row.provider, row.mode), []).append(row)
        for (provider, mode), pts in lines.items():
            pts = sorted(pts, key=lambda r: r.voxels)
            xs = [r.voxels for r in pts]
            ys = [r.median_s * 1e3 for r in pts]
            err = [[(r.median_s - r.q25_s) * 1e3 for r in pts], [(r.q75_s - r.median_s) * 1e3 for r in pts]]
            ax.errorbar(
                xs, ys, yerr=err, marker="o", markersize=3, capsize=2, linestyle=_STYLES.get(mode, "-"),
                color=_COLOURS.get(provider), label=f"{provider} {mode}",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        # minor-tick labels of a log axis spanning less than two decades overlap
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{op} {variant}".strip(), fontsize=10)
        ax.set_xlabel("elements (EMA)" if op == "ema_update_" else "voxels (B x X x Y x Z)")
        ax.set_ylabel("median time (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"pyseg_noise benchmarks on {result.machine.get('device', '?')} ({result.machine.get('cpu', '')})", fontsize=11)
    fig.savefig(path, dpi=110)


def write_all(result: RunResult, targets: Sequence[TargetResult], out_dir: str, plot: bool = True) -> Dict[str, str]:
    """Writes results.md, results.csv and (unless ``plot=False``) scaling.png into ``out_dir``.

    Returns:
        {"md": path, "csv": path, "png": path} of the files written.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {"md": os.path.join(out_dir, "results.md"), "csv": os.path.join(out_dir, "results.csv")}
    write_markdown(result, targets, paths["md"])
    write_csv(result, paths["csv"])
    if plot:
        paths["png"] = os.path.join(out_dir, "scaling.png")
        write_plot(result, paths["png"])
    return paths
