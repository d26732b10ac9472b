"""``python -m benchmarks`` / ``python -m pyseg_noise.benchmarks`` / ``pyseg-noise bench``.

Example:
    python -m benchmarks --sizes paper --out results/bench
    python -m benchmarks --train --train-sizes cpu,paper --out results/train   # whole training steps
    python -m benchmarks --ops pint_pixel_loss,ema --sizes smoke --repeats 3
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

import torch

from . import report
from .catalog import ALL_BENCHES, select
from .op_bench import MODES
from .runner import run_benchmarks
from .sizes import SIZE_SETS
from .targets import evaluate
from .train_bench import TRAIN_METHODS, TRAIN_SIZES, VARIANTS, run_train_benchmarks, train_markdown, train_target_lines

__all__ = ["main", "build_parser"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def _csv(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    providers = sorted({p for b in ALL_BENCHES for p in b.providers})
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Benchmark pyseg_noise's ops against eager PyTorch and torch.compile (speed, memory, "
            "bandwidth) in one process; writes results.md, results.csv and scaling.png."
        ),
    )
    p.add_argument("--ops", default="all", help="comma-separated ops or families (pint, tsman, ema, metrics, all); default all")
    p.add_argument("--sizes", default="paper", choices=SIZE_SETS, help="paper (default), sweep over volume size, or smoke")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: fwd, bwd, fwdbwd (default all three)")
    p.add_argument("--providers", default=None, help=f"comma-separated subset of {', '.join(providers)} (default: all)")
    p.add_argument("--out", default="results/bench", help="output folder (default results/bench)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per provider (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing, >= 1 (default 2)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when available")
    p.add_argument("--dtype", default="float32", choices=tuple(_DTYPES), help="inputs' dtype (targets are judged for float32)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before running (default: torch's)")
    p.add_argument("--copy-mb", type=int, default=256, help="MiB per buffer of the copy-bandwidth measurement (default 256)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--no-plot", action="store_true", help="do not write scaling.png")
    p.add_argument("--list", action="store_true", help="list the ops and their providers, then exit")
    p.add_argument("--train", action="store_true", help="time whole training steps (vnet, pint, tsman) against the "
                   "plain eager fp32 loop instead of the ops; writes train.md and train.csv")
    p.add_argument("--train-methods", default=",".join(TRAIN_METHODS), help="with --train: comma-separated subset of "
                   f"{', '.join(TRAIN_METHODS)}")
    p.add_argument("--train-sizes", default="cpu,paper", help="with --train: comma-separated subset of "
                   f"{', '.join(TRAIN_SIZES)} (cpu: the reproduction's scale; paper: V-Net 16 at 112x112x80, batch 2 "
                   "on CPU)")
    p.add_argument("--variants", default="eager,fast", help="with --train: loops to time beside the eager fp32 one: "
                   f"{', '.join(VARIANTS)}")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmarks the arguments choose; returns the exit status (0)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for b in ALL_BENCHES:
            print(f"{b.family:8} {b.name:30} modes: {','.join(b.modes):15} providers: {','.join(b.providers)}")
        return 0
    try:
        benches = select(_csv(args.ops))
    except ValueError as exc:
        parser.error(str(exc))
    modes = _csv(args.modes)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        parser.error(f"--modes: expected a comma-separated subset of {', '.join(MODES)}, got {args.modes!r}")
    providers = None
    if args.providers is not None:
        providers = _csv(args.providers)
        known = {p for b in ALL_BENCHES for p in b.providers}
        bad = [p for p in providers if p not in known]
        if bad or not providers:
            parser.error(f"--providers: unknown {', '.join(bad) or '(empty)'}; choose from {', '.join(sorted(known))}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.warmup < 1:
        parser.error(f"--warmup must be at least 1 (the first call is never timed), got {args.warmup}")
    if args.copy_mb < 1:
        parser.error(f"--copy-mb must be at least 1, got {args.copy_mb}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    else:
        device = torch.device(args.device)
    if args.train:
        return _train(parser, args, device)

    result = run_benchmarks(
        benches, sizes=args.sizes, modes=modes, providers=providers, device=device, dtype=_DTYPES[args.dtype],
        repeats=args.repeats, warmup=args.warmup, memory=not args.no_memory, copy_bytes=args.copy_mb * 2**20,
    )
    targets = evaluate(result.rows, result.copy_bps, args.dtype)
    paths = report.write_all(result, targets, args.out, plot=not args.no_plot)

    print(" | ".join(f"{k}: {v}" for k, v in result.machine.items()))
    print(f"copy bandwidth: {result.copy_bps / 1e9:.2f} GB/s")
    print()
    print(report.markdown_table(result.rows))
    print()
    for t in targets:
        print(f"[{t.verdict}] {t.target}: {t.value}")
    for line in report.skip_lines(result.skips):
        print(f"not measured: {line}")
    print("\nwrote " + ", ".join(paths.values()))
    sys.stdout.flush()
    return 0


def _train(parser: argparse.ArgumentParser, args, device: torch.device) -> int:
    """``--train``: whole training steps (see :mod:`benchmarks.train_bench`)."""
    import csv
    import os

    from .measure import machine_info

    try:
        rows = run_train_benchmarks(_csv(args.train_methods), _csv(args.train_sizes), variants=_csv(args.variants),
                                    device=device, repeats=args.repeats, warmup=args.warmup,
                                    memory=not args.no_memory)
    except ValueError as exc:
        parser.error(str(exc))
    os.makedirs(args.out, exist_ok=True)
    machine = machine_info(device)
    table = train_markdown(rows)
    verdicts = train_target_lines(rows)
    md = os.path.join(args.out, "train.md")
    with open(md, "w") as f:
        f.write("# Training steps: default loop vs plain eager fp32\n\n")
        f.write("\n".join(f"- {k}: {v}" for k, v in machine.items()) + "\n\n")
        f.write("Parts as % of the step's median (student forward = the method's train_step less the teacher "
                "passes and the loss).\n\n" + table + "\n\n")
        f.write("\n".join(f"- {r.method} {r.size} {r.variant}: {r.speed}" for r in rows) + "\n\n")
        f.write("\n".join(f"- {v}" for v in verdicts) + "\n")
    path_csv = os.path.join(args.out, "train.csv")
    with open(path_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "size", "shape", "variant", "median_s", "q25_s", "q75_s", "ratio_to_eager", "peak_bytes",
                    *[f"{p}_s" for p in (rows[0].parts if rows else {})]])
        for r in rows:
            w.writerow([r.method, r.size, r.shape, r.variant, r.timing.median, r.timing.q25, r.timing.q75, r.ratio,
                        r.peak_bytes, *r.parts.values()])
    print(" | ".join(f"{k}: {v}" for k, v in machine.items()))
    print()
    print(table)
    print()
    for r in rows:
        print(f"{r.method} {r.size} {r.variant}: {r.speed}")
    for v in verdicts:
        print(v)
    print(f"\nwrote {md}, {path_csv}")
    sys.stdout.flush()
    return 0
