"""The reproduction's tables: our numbers beside the paper's, with a collapse column.

PINT: one row per (method, label source, noise rate), aggregated over
repetitions (seeds): Dice in %, ASD in voxels (mean ± sample std over the seeds), the paper's Table 1
entry, and ``COLLAPSED k/n`` when ``k`` of the ``n`` repetitions collapsed
(:func:`pyseg_noise.training.detect_collapse`). Written as Markdown and CSV.

The pieces any reproduction's table is made of — mean ± std over repetitions
(:func:`mean_std`, :func:`format_mean_std`), a Markdown grid, a CSV file, the
per-run CSV and a bar plot — are shared with ``reproduce tsman``.
"""
from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .paper_tables import PINT_TABLE1_NAMES, paper_entry

__all__ = ["RunRecord", "TableRow", "ROW_NAMES", "aggregate", "markdown_table", "write_csv", "plot_dice", "mean_std",
           "format_mean_std", "markdown_grid", "write_grid_csv", "write_runs_csv", "bar_plot"]


#: row id -> the name in the table: Table 1's methods and our equal-budget control (not in the paper)
ROW_NAMES = {**PINT_TABLE1_NAMES, "vnet_same_budget": "V-Net, same budget as PINT"}


@dataclass
class RunRecord:
    """One training run of the protocol and its test-set summary."""

    method: str
    labels: str  # "clean" or "noisy"
    noise_rate: float  # 0 for clean labels
    repeat: int
    seed: int
    run_dir: str
    dice: float
    asd: float
    hd95: float
    jaccard: float
    fg_pred: float
    fg_ref: float
    seconds: float
    collapsed: bool = False
    collapse_reason: str = ""


@dataclass
class TableRow:
    method: str
    labels: str
    noise_rate: float
    dice: Tuple[float, float]
    asd: Tuple[float, float]
    n: int
    collapsed: int
    reasons: List[str] = field(default_factory=list)
    paper: Optional[Tuple] = None

    @property
    def name(self) -> str:
        return ROW_NAMES.get(self.method, self.method)


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """``(mean, sample std)``; ``(inf, nan)`` if any value is not finite, ``(nan, nan)`` for none, std nan for one."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    if not np.all(np.isfinite(arr)):
        return math.inf, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def aggregate(records: Sequence[RunRecord], method_order: Sequence[str]) -> List[TableRow]:
    """Rows in table order: clean V-Net first, then per noise rate the noisy V-Net and each method."""
    groups: Dict[Tuple[str, str, float], List[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.method, r.labels, round(r.noise_rate, 6)), []).append(r)
    order = {m: i for i, m in enumerate(["vnet", *method_order])}
    keys = sorted(groups, key=lambda k: (k[1] != "clean", k[2], order.get(k[0], 99), k[0]))
    rows = []
    for method, labels, rate in keys:
        runs = groups[(method, labels, rate)]
        rows.append(TableRow(
            method=method, labels=labels, noise_rate=rate,
            dice=mean_std([100.0 * r.dice for r in runs]),
            asd=mean_std([r.asd for r in runs]),
            n=len(runs), collapsed=sum(r.collapsed for r in runs),
            reasons=[f"repeat {r.repeat}: {r.collapse_reason}" for r in runs if r.collapsed],
            paper=paper_entry(method, None if labels == "clean" else rate),
        ))
    return rows


def format_mean_std(mean: float, std: float, digits: int = 2) -> str:
    """``"m ± s"``, ``"m"`` without a std, ``"inf"``, or ``"—"`` for no value."""
    if math.isinf(mean):
        return "inf"
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if not math.isnan(std) else "")


def _paper(entry, which: int) -> str:
    if entry is None:
        return "—"
    mean, std = entry[2 * which], entry[2 * which + 1]
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def markdown_table(rows: Sequence[TableRow]) -> str:
    """The table as GitHub Markdown."""
    header = ["Method", "Labels", "Noise", "Dice % (ours)", "ASD vox (ours)", "Dice % (paper)", "ASD vox (paper)",
              "Runs", "Collapse"]
    cells = [[r.name, r.labels, f"{100 * r.noise_rate:.0f}%", format_mean_std(*r.dice), format_mean_std(*r.asd),
              _paper(r.paper, 0), _paper(r.paper, 1), str(r.n), collapse_cell(r.collapsed, r.n)] for r in rows]
    return markdown_grid(header, cells)


def collapse_cell(collapsed: int, n: int) -> str:
    """``"COLLAPSED k/n"`` or ``"no"``."""
    return f"COLLAPSED {collapsed}/{n}" if collapsed else "no"


def markdown_grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table of string cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_grid_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Rows of values (numbers stay numbers) as CSV."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(header))
        w.writerows([list(r) for r in rows])


def write_csv(rows: Sequence[TableRow], path: Path) -> None:
    """The table as CSV (one column per number)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "labels", "noise_rate", "dice_pct", "dice_pct_std", "asd", "asd_std", "paper_dice_pct",
                    "paper_dice_pct_std", "paper_asd", "paper_asd_std", "runs", "collapsed_runs"])
        for r in rows:
            p = r.paper or (None, None, None, None)
            w.writerow([r.method, r.labels, r.noise_rate, *r.dice, *r.asd, *p, r.n, r.collapsed])


def write_runs_csv(records: Sequence[object], path: Path) -> None:
    """Every run's numbers (one line per run; ``records`` are instances of one dataclass)."""
    fields = [f.name for f in dataclasses.fields(records[0])] if records else list(RunRecord.__dataclass_fields__)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in records:
            w.writerow({k: getattr(r, k) for k in fields})


def plot_dice(rows: Sequence[TableRow], path: Path, title: str) -> Optional[Path]:
    """Bars of our Dice per row, with the paper's as markers."""
    if not rows:
        return None
    return bar_plot(
        [f"{r.name}\n{r.labels} {100 * r.noise_rate:.0f}%" for r in rows], [r.dice for r in rows],
        path, title, paper=[r.paper[0] if r.paper else None for r in rows], paper_label="paper (Table 1)",
        colors=["tab:red" if r.collapsed else ("tab:gray" if r.method.startswith("vnet") else "tab:blue")
                for r in rows])


def bar_plot(labels: Sequence[str], values: Sequence[Tuple[float, float]], path: Path, title: str, *,
             paper: Optional[Sequence[Optional[float]]] = None, paper_label: str = "paper",
             colors: Optional[Sequence[str]] = None, ylabel: str = "Dice (%)") -> Optional[Path]:
    """Bars of ``(mean, std)`` per row (non-finite as 0), optionally the paper's values as markers, to ``path``."""
    if not labels:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    ours = [m if math.isfinite(m) else 0.0 for m, _ in values]
    errs = [s if math.isfinite(s) else 0.0 for _, s in values]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels)), 4))
    x = np.arange(len(labels))
    ax.bar(x, ours, yerr=errs, color=list(colors) if colors else "tab:blue", alpha=0.8, label="ours")
    if paper is not None:
        ax.plot(x, [np.nan if p is None else p for p in paper], "k_", markersize=22, mew=2, label=paper_label)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
