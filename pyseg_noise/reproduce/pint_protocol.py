"""``pyseg-noise reproduce pint``: PINT's Table 1 protocol, end to end.

For each repetition ``r`` (seed ``seed + r``):

1. train the V-Net on the **clean** labels (the paper's upper bound);
2. for each noise rate: draw noisy labels (PINT §3.2: that share of the
   training cases eroded or dilated, radius uniform in the range), then train
   the V-Net on them and every method of ``--methods`` on them, with the same
   budget, data and seed;
3. when PINT is among the methods, the equal-budget control (NOT a row of the
   paper): the V-Net on the same noisy labels for PINT's phase 1 + phase 2
   iterations, with PINT's phase-2 restart at the constant ``image_phase_lr``
   (``vnet`` with ``method_options.restart_iterations``); it separates PINT's
   effect from its extra iterations;
4. evaluate every run on the clean test labels: Dice and ASD (and HD95).

Then aggregate over repetitions (mean ± std over seeds), flag collapsed runs,
and print and write the table beside Table 1's numbers, with a verdict per
V-Net row (:mod:`pyseg_noise.reproduce.verdict`: paired per-seed differences,
the paper's regime, one-seed runs marked as such). Every run is an ordinary run folder (config,
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

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from pyseg_noise.training.collapse import detect_collapse
from pyseg_noise.training.config import ConfigError
from pyseg_noise.training.registry import method_names
from pyseg_noise.training.trainer import resolve_device

from .common import (ReproduceReport, ReproduceSettings, check_seed_and_repeats, prepare_data, reject_foreign,
                     run_config, split_overrides, train_run, train_runs_in_parallel)
from .diagnostics import diagnostics_table, noise_diagnostic, summary_line
from .noisy_labels import PAPER_RADIUS_RANGE, structure_radius_range, write_noisy_labels
from .paper_tables import PINT_TABLE1
from .report import RunRecord, aggregate, markdown_table, plot_dice, write_csv, write_runs_csv
from .scales import SCALES, Scale, default_scale
from .verdict import compare, regime_check

__all__ = ["ReproduceSettings", "ReproduceReport", "reproduce_pint", "default_methods", "PINT_METHODS",
           "SAME_BUDGET", "budget_summary", "same_budget_config"]

#: the PINT variants, always run by default
PINT_METHODS = ("pnt", "int", "pint")
#: Table 1's other baselines, added by default at paper scale when registered
TABLE1_BASELINES = ("reweight", "trinet", "pickandlearn")
#: the row id of the equal-budget control ("V-Net, same budget as PINT"); its runs are ``vnet`` runs
SAME_BUDGET = "vnet_same_budget"


def default_methods(scale: str) -> List[str]:
    """PNT, INT, PINT; at paper scale also Table 1's registered baselines."""
    methods = list(PINT_METHODS)
    if scale == "paper":
        registered = set(method_names())
        methods += [m for m in TABLE1_BASELINES if m in registered]
    return methods


#: kept for callers of the former private name
_split_overrides = split_overrides


def _check_settings(s: ReproduceSettings) -> Tuple[Scale, List[str], List[float], int]:
    reject_foreign(s, "pint")
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
    repeats = check_seed_and_repeats(s, scale.repeats)
    if s.jobs is not None and (isinstance(s.jobs, bool) or not isinstance(s.jobs, int) or s.jobs < 1):
        raise ConfigError(f"--jobs must be a positive integer, got {s.jobs!r}")
    if s.radius_range is not None and not (0 <= s.radius_range[0] <= s.radius_range[1]):
        raise ConfigError(f"--radius-range must be two integers 0 <= low <= high, got {list(s.radius_range)}")
    return scale, methods, rates, repeats


def _run_config(s: ReproduceSettings, scale: Scale, method: str, seed: int, data_root: Path,
                label_dir: Optional[Path], common: List[str], per_method: Dict[str, List[str]]):
    return run_config(s, scale.config_overrides(), method, scale.method_overrides(method), seed, data_root,
                      label_dir, [common, per_method.get(method, [])])


def same_budget_config(vnet_config, pint_config):
    """The equal-budget control's config: ``vnet_config`` trained as long as ``pint_config``.

    Phase 1 (iterations and optimizer schedule) is PINT's, followed by PINT's phase 2 as
    ``method_options.restart_iterations`` at the constant ``restart_lr`` = ``image_phase_lr``;
    everything else (data, labels, network, seed) is the V-Net's.

    Example:
        >>> from pyseg_noise.training.config import config_from_dict
        >>> v = config_from_dict({"method": "vnet", "iterations": 900})
        >>> p = config_from_dict({"method": "pint", "iterations": 900,
        ...                       "method_options": {"image_phase_iterations": 300, "image_phase_lr": 0.01}})
        >>> c = same_budget_config(v, p); c.iterations, c.method_options
        (900, VNetOptions(restart_iterations=300, restart_lr=0.01))
    """
    from pyseg_noise.training.vnet import VNetOptions

    o = pint_config.method_options
    return dataclasses.replace(vnet_config, iterations=pint_config.iterations, optim=dataclasses.replace(
        pint_config.optim), method_options=VNetOptions(restart_iterations=o.image_phase_iterations,
                                                       restart_lr=o.image_phase_lr))


def budget_summary(configs: Dict[str, object]) -> str:
    """The budget the runs of ``configs`` (``{method: TrainConfig}``, with ``"vnet"``) actually use.

    The V-Net's values, then PINT's phase 2, then any value another method changes (a
    ``--set METHOD:KEY=VALUE``).

    Example:
        >>> from pyseg_noise.training.config import config_from_dict
        >>> cfgs = {"vnet": config_from_dict({"method": "vnet", "iterations": 900, "model": {"n_filters": 8},
        ...                                   "data": {"crop_size": [48, 48, 32]}, "optim": {"lr_step": 375}}),
        ...         "pint": config_from_dict({"method": "pint", "iterations": 900, "model": {"n_filters": 8},
        ...                                   "data": {"crop_size": [48, 48, 32]}, "optim": {"lr_step": 375},
        ...                                   "method_options": {"image_phase_iterations": 300}})}
        >>> budget_summary(cfgs)
        '48x48x32 crops, V-Net n_filters 8, batch 4, 900 it, SGD lr 0.01 x0.1 every 375 it; PINT phase 2: +300 it at lr 0.01'
    """
    def values(c) -> Dict[str, str]:
        o = c.optim
        if o.lr_policy == "step":
            schedule = f"{o.name.upper()} lr {o.lr:g} x{o.lr_gamma:g} every {o.lr_step} it"
        elif o.lr_policy == "poly":
            schedule = f"{o.name.upper()} lr {o.lr:g} poly {o.poly_power:g}"
        else:
            schedule = f"{o.name.upper()} lr {o.lr:g} constant"
        return {"crop": "x".join(map(str, c.data.crop_size)) + " crops", "width": f"n_filters {c.model.n_filters}",
                "batch": f"batch {c.batch_size}", "iterations": f"{c.iterations} it", "schedule": schedule}

    base = values(configs["vnet"])
    text = ", ".join([base["crop"], "V-Net " + base["width"], base["batch"], base["iterations"], base["schedule"]])
    pint = configs.get("pint")
    if pint is not None:
        text += (f"; PINT phase 2: +{pint.method_options.image_phase_iterations} it at lr "
                 f"{pint.method_options.image_phase_lr:g}")
    for method, cfg in configs.items():
        changed = [v for k, v in values(cfg).items() if v != base[k]]
        if method != "vnet" and changed:
            text += f"; {method}: {', '.join(changed)}"
    return text


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
    common, per_method = split_overrides(settings.overrides)
    same_budget = "pint" in methods
    rows_run = ["vnet", *([SAME_BUDGET] if same_budget else []), *methods]
    for m in per_method:
        if m not in rows_run:
            raise ConfigError(f"override for {m!r}, which is not among the methods run ({', '.join(rows_run)})")
    out = Path(settings.out or "pint_reproduction")
    out.mkdir(parents=True, exist_ok=True)
    say = print_fn
    data = prepare_data(settings, scale.shape, scale.n_train, scale.n_test, out, say)
    data_root, data_desc = data.root, data.description
    if settings.radius_range:
        radius = tuple(settings.radius_range)
    elif data.synthetic:
        radius = structure_radius_range(scale.shape, data.foreground_fraction)
    else:
        radius = PAPER_RADIUS_RANGE

    # validate every run's config before the first training
    probe = {m: _run_config(settings, scale, m, settings.seed, data_root, None, common, per_method)
             for m in ("vnet", *methods)}

    def control_config(seed, label_dir):
        """The equal-budget V-Net: the V-Net's run (``vnet:`` and ``vnet_same_budget:`` overrides) for PINT's budget."""
        vnet = run_config(settings, scale.config_overrides(), "vnet", scale.method_overrides("vnet"), seed, data_root,
                          label_dir, [common, per_method.get("vnet", []), per_method.get(SAME_BUDGET, [])])
        pint = _run_config(settings, scale, "pint", seed, data_root, label_dir, common, per_method)
        return same_budget_config(vnet, pint)

    if same_budget:
        control_config(settings.seed, None)  # built (and so checked) before any training
    device = resolve_device(probe["vnet"].device)
    warmups = {m: c.method_options.ce_warmup_iterations for m, c in probe.items()
               if hasattr(c.method_options, "ce_warmup_iterations") and c.method_options.ce_warmup_iterations}
    header = [
        f"PINT Table 1 reproduction — scale: {scale.name}" + (" with --set overrides" if settings.overrides else "")
        + f" ({budget_summary(probe)})",
        f"data: {data_desc}",
        f"noise: {', '.join(f'{100 * r:.0f}%' for r in rates)} of the training cases eroded/dilated by "
        f"{radius[0]}-{radius[1]} voxels" + ("" if settings.data or settings.radius_range else
                                             " (PINT's 5-18 scaled to the synthetic structure size)"),
        f"methods: V-Net (clean and noisy labels)" + (", V-Net with PINT's budget (noisy labels; not in the paper)"
                                                      if same_budget else "")
        + f", {', '.join(methods) or '(none)'}; repetitions: {repeats} "
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
    diagnostics: List[dict] = []  # does PINT's teacher locate the noise? (one per PINT run)

    def repeat_jobs(r: int, announce: bool) -> List[Tuple[str, str, float, Optional[Path], Path, object]]:
        """Repeat ``r``'s runs: (method, labels, rate, label folder, run folder, config); writes its noisy labels."""
        seed = settings.seed + r
        plan: List[Tuple[str, str, float, Optional[Path]]] = [("vnet", "clean", 0.0, None)]
        for rate in rates:
            label_dir = out / "labels" / f"noise{round(100 * rate)}_seed{seed}"
            manifest = write_noisy_labels(data_root, label_dir, rate, seed, radius_range=radius)
            if announce:
                say(f"[repeat {r}] noisy labels {100 * rate:.0f}%: {manifest['num_noisy']} of "
                    f"{len(manifest['records'])} training cases corrupted -> {label_dir}")
            plan += [(m, "noisy", rate, label_dir) for m in rows_run]
        jobs = []
        for method, labels, rate, label_dir in plan:
            tag = "clean" if labels == "clean" else f"noise{round(100 * rate)}"
            cfg = (control_config(seed, label_dir) if method == SAME_BUDGET else
                   _run_config(settings, scale, method, seed, data_root, label_dir, common, per_method))
            jobs.append((method, labels, rate, label_dir, out / "runs" / f"rep{r}" / tag / method, cfg))
        return jobs

    trained: Dict[str, float] = {}
    if (settings.jobs or 1) > 1:  # every training first, in parallel; the loop below then evaluates in order
        runs = [(cfg, run_dir) for r in range(repeats) for *_, run_dir, cfg in repeat_jobs(r, announce=False)]
        trained = train_runs_in_parallel(runs, settings.overwrite, settings.jobs, say)
    for r in range(repeats):
        seed = settings.seed + r
        clean_summary = None
        for method, labels, rate, label_dir, run_dir, cfg in repeat_jobs(r, announce=True):
            say(f"[repeat {r}] training {method} on {labels} labels"
                + (f" ({100 * rate:.0f}% noisy cases)" if labels == "noisy" else "") + f" -> {run_dir}")
            summary, seconds, reused = train_run(cfg, run_dir, settings.overwrite)
            if str(run_dir) in trained:  # trained by a worker of this invocation
                seconds, reused = trained[str(run_dir)], False
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
            if method == "pint" and labels == "noisy":
                found = noise_diagnostic(run_dir, data_root, label_dir, device=str(device))
                diagnostics.append({"noise_rate": rate, "seed": seed, "run_dir": str(run_dir), **found})
                say(f"    teacher diagnostic: {summary_line(found['summary'])}")

    rows = aggregate(records, [m for m in rows_run if m != "vnet"])
    table = markdown_table(rows)
    warnings, verdicts = _conclusions(rows, rates, records, same_budget)
    seconds = time.perf_counter() - started
    title = f"PINT Table 1 — {scale.name} scale, {'user data' if settings.data else 'synthetic data'}"
    diag_md = []
    for d in diagnostics:
        diag_md += ["", f"## PINT's teacher on the corrupted training cases — {100 * d['noise_rate']:.0f}% noise, "
                        f"seed {d['seed']}", "", summary_line(d["summary"]), "", diagnostics_table(d["cases"])]
    (out / "table.md").write_text("\n".join(["# " + title, "", *header, "", table, "", *verdicts, *warnings,
                                             *diag_md, ""]))
    write_csv(rows, out / "table.csv")
    write_runs_csv(records, out / "runs.csv")
    plot_dice(rows, out / "plots" / "dice.png", title)
    (out / "report.json").write_text(json.dumps({
        "scale": scale.name, "data": data_desc, "noise_rates": rates, "repeats": repeats, "methods": methods,
        "radius_range": list(radius), "seconds": round(seconds, 1), "verdicts": verdicts, "warnings": warnings,
        "runs": [r.__dict__ for r in records], "teacher_diagnostics": diagnostics}, indent=1, default=str))
    say("")
    say(table)
    say("")
    for line in verdicts + warnings:
        say(line)
    say(f"wall time {seconds / 60:.1f} min; tables, plots and run folders in {out}")
    return ReproduceReport(records, table, header, warnings, verdicts, out, seconds)


def _dice_by_seed(records, method: str, labels: str, rate: float) -> Dict[int, float]:
    """``{seed: Dice %}`` of one row's runs."""
    return {r.seed: 100.0 * r.dice for r in records
            if r.method == method and r.labels == labels and round(r.noise_rate, 6) == rate}


def _conclusions(rows, rates, records, same_budget: bool = True) -> Tuple[List[str], List[str]]:
    """Verdict lines (PINT against each V-Net row, per noise rate) and warnings (regime, collapses)."""
    warnings, verdicts = [], []
    by_key = {(r.method, r.labels, r.noise_rate): r for r in rows}
    clean = _dice_by_seed(records, "vnet", "clean", 0.0)
    baselines = [("vnet", "V-Net (noisy labels)")] + ([(SAME_BUDGET, "V-Net, same budget as PINT")]
                                                      if same_budget else [])
    for rate in rates:
        rate = round(rate, 6)
        pint_row = by_key.get(("pint", "noisy", rate))
        noisy_vnet = _dice_by_seed(records, "vnet", "noisy", rate)
        regime = regime_check(list(clean.values()), list(noisy_vnet.values()), rate)
        if not regime.in_regime:
            warnings.append(f"WARNING: at {100 * rate:.0f}% noise the run is OUT OF THE PAPER'S REGIME: {regime.reason}. "
                            "The table does not test the paper's claim at this budget.")
        if pint_row is None:
            continue
        paper = PINT_TABLE1["pint"].get(rate), PINT_TABLE1["vnet"].get(rate)
        for method, name in baselines:
            base_row = by_key.get((method, "noisy", rate))
            if base_row is None:
                continue
            paper_diff = paper[0][0] - paper[1][0] if method == "vnet" and all(paper) else None
            verdicts.append(compare(
                _dice_by_seed(records, "pint", "noisy", rate), _dice_by_seed(records, method, "noisy", rate),
                noise_rate=rate, regime=regime, baseline_name=name, method_collapsed=pint_row.collapsed,
                baseline_collapsed=base_row.collapsed, runs=max(pint_row.n, base_row.n), paper_diff=paper_diff).line)
    for r in rows:
        if r.collapsed:
            warnings.append(f"WARNING: {r.name} on {r.labels} labels ({100 * r.noise_rate:.0f}%) collapsed in "
                            f"{r.collapsed} of {r.n} runs: " + "; ".join(r.reasons))
    return warnings, verdicts
