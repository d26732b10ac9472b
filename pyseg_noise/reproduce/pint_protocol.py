"""``pyseg-noise reproduce pint``: PINT's Table 1 protocol, end to end.

For each repetition ``r`` (seed ``seed + r``):

1. train the V-Net on the **clean** labels (the paper's upper bound);
2. for each noise rate: draw noisy labels (PINT §3.2: that share of the
   training cases eroded or dilated, radius uniform in the range), then train
   the V-Net on them and every method of ``--methods`` on them, with the same
   budget, data and seed;
3. evaluate every run on the clean test labels: Dice and ASD (and HD95).

Then aggregate over repetitions, flag collapsed runs, and print and write the
table beside Table 1's numbers. Every run is an ordinary run folder (config,
log, checkpoint, plots); an interrupted reproduction picks up where it
stopped when started again with the same settings.

Data: ``--data`` points at an LA ``.h5`` folder or an nnU-Net folder with a
training split and a test split with clean labels; it is only read (noisy
labels go into the output folder). Without ``--data`` a synthetic LA-like
dataset is generated into the output folder. PINT's 5-18 voxel radii act on
an atrium of ~40 voxels radius; on the smaller synthetic structures they are
scaled to the same relative strength (:func:`structure_radius_range`) unless
``radius_range`` is given.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from pyseg_noise.data import detect_layout, generate_synthetic_dataset, open_dataset
from pyseg_noise.training.collapse import detect_collapse
from pyseg_noise.training.config import ConfigError, config_from_dict, merge_dicts, parse_overrides
from pyseg_noise.training.registry import method_names
from pyseg_noise.training.trainer import Trainer, config_differences, resolve_device

from .noisy_labels import PAPER_RADIUS_RANGE, structure_radius_range, write_noisy_labels
from .paper_tables import PINT_TABLE1
from .report import RunRecord, aggregate, markdown_table, plot_dice, write_csv, write_runs_csv
from .scales import SCALES, Scale, default_scale

__all__ = ["ReproduceSettings", "ReproduceReport", "reproduce_pint", "default_methods", "PINT_METHODS"]

#: the PINT variants, always run by default
PINT_METHODS = ("pnt", "int", "pint")
#: Table 1's other baselines, added by default at paper scale when registered
TABLE1_BASELINES = ("reweight", "trinet", "pickandlearn")


@dataclass
class ReproduceSettings:
    """What ``pyseg-noise reproduce pint`` was asked to do (None = the scale's default).

    Attributes:
        out: output folder (tables, plots, logs, one run folder per training run).
        scale: ``"smoke"``, ``"cpu"`` or ``"paper"`` (default: paper with a GPU, else cpu).
        data: dataset folder; None generates the synthetic dataset.
        methods: methods trained on noisy labels besides the V-Net.
        noise_rates: shares of noisy training cases.
        repeats: repetitions (seeds ``seed .. seed + repeats - 1``).
        seed: base seed.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        radius_range: erosion/dilation radii; None = paper's 5-18 on user data, scaled on synthetic data.
        overrides: ``KEY=VALUE`` config overrides for every run; ``METHOD:KEY=VALUE`` for one method.
        overwrite: discard runs of different settings found in ``out``.
        progress: progress bars.
        num_workers: DataLoader workers per run (None = the scale's).
    """

    out: str = "pint_reproduction"
    scale: Optional[str] = None
    data: Optional[str] = None
    methods: Optional[List[str]] = None
    noise_rates: Optional[List[float]] = None
    repeats: Optional[int] = None
    seed: int = 0
    device: str = "auto"
    radius_range: Optional[Tuple[int, int]] = None
    overrides: List[str] = field(default_factory=list)
    overwrite: bool = False
    progress: bool = True
    num_workers: Optional[int] = None


@dataclass
class ReproduceReport:
    """The outcome: per-run records, the table (Markdown), and the header lines printed above it."""

    records: List[RunRecord]
    table: str
    header: List[str]
    warnings: List[str]
    verdicts: List[str]
    out: Path
    seconds: float


def default_methods(scale: str) -> List[str]:
    """PNT, INT, PINT; at paper scale also Table 1's registered baselines."""
    methods = list(PINT_METHODS)
    if scale == "paper":
        registered = set(method_names())
        methods += [m for m in TABLE1_BASELINES if m in registered]
    return methods


def _split_overrides(items: Sequence[str]) -> Tuple[List[str], Dict[str, List[str]]]:
    common: List[str] = []
    per_method: Dict[str, List[str]] = {}
    for item in items:
        key = item.split("=", 1)[0]
        if ":" in key:
            method, rest = item.split(":", 1)
            per_method.setdefault(method.strip(), []).append(rest)
        else:
            common.append(item)
    return common, per_method


def _check_settings(s: ReproduceSettings) -> Tuple[Scale, List[str], List[float], int]:
    scale_name = s.scale or default_scale()
    if scale_name not in SCALES:
        raise ConfigError(f"--scale must be one of {', '.join(SCALES)}, got {scale_name!r}")
    scale = SCALES[scale_name]
    methods = list(dict.fromkeys(s.methods if s.methods is not None else default_methods(scale_name)))
    registered = method_names()
    unknown = [m for m in methods if m not in registered]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r} in --methods; registered methods: {', '.join(registered)}")
    methods = [m for m in methods if m != "vnet"]  # the V-Net rows are always there
    rates = list(s.noise_rates if s.noise_rates is not None else scale.noise_rates)
    for r in rates:
        if not 0.0 < r <= 1.0:
            raise ConfigError(f"--noise-rates must lie in (0, 1], got {r}")
    repeats = s.repeats if s.repeats is not None else scale.repeats
    if repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {repeats}")
    if s.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {s.seed}")
    if s.radius_range is not None and not (0 <= s.radius_range[0] <= s.radius_range[1]):
        raise ConfigError(f"--radius-range must be two integers 0 <= low <= high, got {list(s.radius_range)}")
    return scale, methods, rates, repeats


def _prepare_data(s: ReproduceSettings, scale: Scale, out: Path, say) -> Tuple[Path, str, Tuple[int, int]]:
    if s.data is not None:
        root = Path(s.data)
        if not root.is_dir():
            raise FileNotFoundError(f"--data folder not found: {root}")
        try:
            layout = detect_layout(root)
            train = open_dataset(root, "train", layout=layout, crop_size=None, augment=False)
            test = open_dataset(root, "test", layout=layout, crop_size=None, augment=False)
        except (ValueError, FileNotFoundError) as exc:
            raise ConfigError(f"--data {root}: {exc} (reproduce needs a training split and a test split with "
                              "clean labels)") from exc
        radius = tuple(s.radius_range) if s.radius_range else PAPER_RADIUS_RANGE
        desc = f"{root} ({layout}, {len(train)} training / {len(test)} test cases, clean test labels)"
        return root, desc, radius
    root = out / "data"
    settings = {"seed": s.seed, "shape": list(scale.shape), "n_train": scale.n_train, "n_test": scale.n_test}
    marker = root / "synthetic.json"
    info = None
    if marker.is_file():
        old = json.loads(marker.read_text())
        if {k: old.get(k) for k in settings} == settings:
            info = old
    if info is None:
        say(f"generating the synthetic dataset: {scale.n_train} training + {scale.n_test} test volumes of "
            f"{'x'.join(map(str, scale.shape))} ...")
        gen = generate_synthetic_dataset(root, n_train=scale.n_train, n_test=scale.n_test, shape=scale.shape,
                                         seed=s.seed, overwrite=True)
        fractions = [gen["foreground_fraction"][c] for c in gen["train"]]
        info = {**json.loads(marker.read_text()), "mean_train_foreground": float(np.mean(fractions))}
        marker.write_text(json.dumps(info, indent=1))
    fg = float(info.get("mean_train_foreground", 0.075))
    radius = tuple(s.radius_range) if s.radius_range else structure_radius_range(scale.shape, fg)
    desc = (f"synthetic LA-like volumes generated in {root} ({scale.n_train} training / {scale.n_test} test, "
            f"{'x'.join(map(str, scale.shape))}, {100 * fg:.1f}% foreground, seed {s.seed})")
    return root, desc, radius


def _run_config(s: ReproduceSettings, scale: Scale, method: str, seed: int, data_root: Path,
                label_dir: Optional[Path], common: List[str], per_method: Dict[str, List[str]]):
    values = merge_dicts({"method": method, "seed": seed, "device": s.device, "progress": s.progress,
                          "data": {"root": str(data_root)},
                          "method_options": scale.method_overrides(method)}, scale.config_overrides())
    if s.num_workers is not None:
        values = merge_dicts(values, {"data": {"num_workers": s.num_workers}})
    if label_dir is not None:
        values = merge_dicts(values, {"data": {"label_overrides": str(label_dir)}})
    for items in (common, per_method.get(method, [])):
        if items:
            values = merge_dicts(values, parse_overrides(items))
    return config_from_dict(values)


def _train(config, run_dir: Path, overwrite: bool, say) -> Tuple[dict, float, bool]:
    """Train (or reuse a finished run / resume an interrupted one); returns (summary, seconds, reused)."""
    summary_file = run_dir / "eval" / "summary.json"
    config_file = run_dir / "config.yaml"
    resume = False
    if config_file.is_file():
        old = yaml.safe_load(config_file.read_text())
        diffs = config_differences(old, config.to_dict())
        if not diffs and summary_file.is_file():
            return json.loads(summary_file.read_text()), 0.0, True
        if not diffs and (run_dir / "checkpoints" / "last.pt").is_file():
            resume = True
        elif diffs and not overwrite:
            raise ConfigError(f"{run_dir} holds a run with other settings ({', '.join(diffs[:4])}); "
                              "use another --out or pass --overwrite")
        elif diffs:
            shutil.rmtree(run_dir)
    started = time.perf_counter()
    result = Trainer(config, run_dir, resume=resume, overwrite=overwrite and not resume).fit()
    if result.summary is None:
        raise ConfigError(f"the run in {run_dir} could not be evaluated: no test split with clean labels")
    return result.summary, time.perf_counter() - started, False


def reproduce_pint(settings: ReproduceSettings, *, print_fn: Callable[[str], None] = print) -> ReproduceReport:
    """Run PINT's Table 1 protocol (module docstring) and return/print/write its table.

    Outputs in ``settings.out``: ``table.md``, ``table.csv``, ``runs.csv``, ``report.json``,
    ``plots/dice.png``, ``data/`` (synthetic data), ``labels/`` (noisy labels),
    ``runs/rep<r>/...`` (one run folder per training).

    Raises:
        ConfigError / FileNotFoundError: bad settings or data (before any training).
    """
    started = time.perf_counter()
    scale, methods, rates, repeats = _check_settings(settings)
    common, per_method = _split_overrides(settings.overrides)
    for m in per_method:
        if m not in ("vnet", *methods):
            raise ConfigError(f"override for {m!r}, which is not among the methods run (vnet, {', '.join(methods)})")
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    say = print_fn
    data_root, data_desc, radius = _prepare_data(settings, scale, out, say)

    # validate every run's config before the first training
    probe = {m: _run_config(settings, scale, m, settings.seed, data_root, None, common, per_method)
             for m in ("vnet", *methods)}
    device = resolve_device(probe["vnet"].device)
    warmups = {m: c.method_options.ce_warmup_iterations for m, c in probe.items()
               if hasattr(c.method_options, "ce_warmup_iterations") and c.method_options.ce_warmup_iterations}
    header = [
        f"PINT Table 1 reproduction — scale: {scale.name} ({scale.summary})",
        f"data: {data_desc}",
        f"noise: {', '.join(f'{100 * r:.0f}%' for r in rates)} of the training cases eroded/dilated by "
        f"{radius[0]}-{radius[1]} voxels" + ("" if settings.data or settings.radius_range else
                                             " (PINT's 5-18 scaled to the synthetic structure size)"),
        f"methods: V-Net (clean and noisy labels), {', '.join(methods) or '(none)'}; repetitions: {repeats} "
        f"(seeds {settings.seed}..{settings.seed + repeats - 1}); device: {device}",
    ]
    if warmups:
        header.append("NOT IN THE PAPER: plain-CE warm-up of " +
                      ", ".join(f"{m} {n} it" for m, n in warmups.items()))
    if common or per_method:
        header.append(f"overrides: {' '.join(settings.overrides)}")
    for line in header:
        say(line)

    records: List[RunRecord] = []
    for r in range(repeats):
        seed = settings.seed + r
        jobs: List[Tuple[str, str, float, Optional[Path]]] = [("vnet", "clean", 0.0, None)]
        for rate in rates:
            label_dir = out / "labels" / f"noise{round(100 * rate)}_seed{seed}"
            manifest = write_noisy_labels(data_root, label_dir, rate, seed, radius_range=radius)
            say(f"[repeat {r}] noisy labels {100 * rate:.0f}%: {manifest['num_noisy']} of "
                f"{len(manifest['records'])} training cases corrupted -> {label_dir}")
            jobs += [(m, "noisy", rate, label_dir) for m in ("vnet", *methods)]
        clean_summary = None
        for method, labels, rate, label_dir in jobs:
            tag = "clean" if labels == "clean" else f"noise{round(100 * rate)}"
            run_dir = out / "runs" / f"rep{r}" / tag / method
            cfg = _run_config(settings, scale, method, seed, data_root, label_dir, common, per_method)
            say(f"[repeat {r}] training {method} on {labels} labels"
                + (f" ({100 * rate:.0f}% noisy cases)" if labels == "noisy" else "") + f" -> {run_dir}")
            summary, seconds, reused = _train(cfg, run_dir, settings.overwrite, say)
            if labels == "clean":
                clean_summary = summary
            verdict = detect_collapse(summary, None if labels == "clean" else clean_summary)
            rec = RunRecord(method=method, labels=labels, noise_rate=rate, repeat=r, seed=seed, run_dir=str(run_dir),
                            dice=summary["dice"], asd=summary["asd"], hd95=summary["hd95"],
                            jaccard=summary["jaccard"], fg_pred=summary["fg_pred"], fg_ref=summary["fg_ref"],
                            seconds=round(seconds, 1), collapsed=verdict.collapsed, collapse_reason=verdict.reason)
            records.append(rec)
            say(f"    Dice {100 * rec.dice:.2f}%  ASD {rec.asd:.2f}  foreground {100 * rec.fg_pred:.2f}% "
                f"(clean labels {100 * rec.fg_ref:.2f}%)" + ("  [reused]" if reused else f"  [{seconds:.0f} s]")
                + (f"  COLLAPSED: {rec.collapse_reason}" if rec.collapsed else ""))

    rows = aggregate(records, methods)
    table = markdown_table(rows)
    warnings, verdicts = _conclusions(rows, rates, records)
    seconds = time.perf_counter() - started
    title = f"PINT Table 1 — {scale.name} scale, {'user data' if settings.data else 'synthetic data'}"
    (out / "table.md").write_text("\n".join(["# " + title, "", *header, "", table, "", *verdicts, *warnings, ""]))
    write_csv(rows, out / "table.csv")
    write_runs_csv(records, out / "runs.csv")
    plot_dice(rows, out / "plots" / "dice.png", title)
    (out / "report.json").write_text(json.dumps({
        "scale": scale.name, "data": data_desc, "noise_rates": rates, "repeats": repeats, "methods": methods,
        "radius_range": list(radius), "seconds": round(seconds, 1), "verdicts": verdicts, "warnings": warnings,
        "runs": [r.__dict__ for r in records]}, indent=1, default=str))
    say("")
    say(table)
    say("")
    for line in verdicts + warnings:
        say(line)
    say(f"wall time {seconds / 60:.1f} min; tables, plots and run folders in {out}")
    return ReproduceReport(records, table, header, warnings, verdicts, out, seconds)


def _conclusions(rows, rates, records) -> Tuple[List[str], List[str]]:
    warnings, verdicts = [], []
    by_key = {(r.method, r.labels, r.noise_rate): r for r in rows}
    for rate in rates:
        rate = round(rate, 6)
        base = by_key.get(("vnet", "noisy", rate))
        pint = by_key.get(("pint", "noisy", rate))
        if base is None or pint is None:
            continue
        diff = pint.dice[0] - base.dice[0]
        paper = PINT_TABLE1["pint"].get(rate), PINT_TABLE1["vnet"].get(rate)
        paper_txt = f" (paper: {paper[0][0] - paper[1][0]:+.2f})" if all(paper) else ""
        verdict = "beats" if diff > 0 else "does NOT beat"
        verdicts.append(f"At {100 * rate:.0f}% noise PINT {verdict} plain CE on Dice: {pint.dice[0]:.2f}% vs "
                        f"{base.dice[0]:.2f}% ({diff:+.2f} points){paper_txt}.")
    clean = [r for r in rows if r.labels == "clean"]
    if clean and not math.isinf(clean[0].dice[0]) and clean[0].dice[0] < 50.0:
        warnings.append(f"WARNING: the clean-label V-Net reaches only {clean[0].dice[0]:.1f}% Dice: the budget is too "
                        "small for any comparison to mean much.")
    for r in rows:
        if r.collapsed:
            warnings.append(f"WARNING: {r.name} on {r.labels} labels ({100 * r.noise_rate:.0f}%) collapsed in "
                            f"{r.collapsed} of {r.n} runs: " + "; ".join(r.reasons))
    return warnings, verdicts
