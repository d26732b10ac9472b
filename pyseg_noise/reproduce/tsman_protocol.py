"""``pyseg-noise reproduce tsman``: TSMAN's Table 1 (distillation) and Table 2 (attention ablation), end to end.

For each repetition ``r`` (seed ``s = seed + r``) and each labelled fraction
``xi`` (Table 1's, and Table 2's):

1. **split** — ``round(xi * N)`` training cases keep their manual labels, the
   others are treated as unlabelled (:func:`~pyseg_noise.training.self_training.split_cases`,
   drawn with seed ``s``);
2. **base models A, B, C** — DenseVoxNets with the streams' sizes trained
   with plain CE and deep supervision (``densevoxnet``, Table 2's "Baseline":
   no attention), on the labelled cases only, seeds ``s, s+1, s+2``, for
   10,000 / 15,000 / 20,000 of the retrained runs' 35,000 iterations (TSMAN
   "Implementation Details", scaled with the budget);
3. **Table 1** — every unlabelled case is labelled by A, B and C alone, by
   model distillation (MD), by data distillation of each model (DD: 4
   in-plane rotations x {no flip, flip X, flip Y}) and by hierarchical
   distillation (HD: the voting function g over the three DD results, Eq. 10;
   g = majority of hard labels with a mean-softmax tie-break), all from one pass
   (:func:`~pyseg_noise.training.distill.distillation_variants`); each pseudo
   label is scored against the case's clean label: Dice, ASD, HD;
4. **Table 2** (at the ablation's ``xi``) — the HD pseudo labels replace the
   unlabelled cases' labels, and TSMAN is fine-tuned on manual + pseudo labels
   in each of the paper's five attention configurations (none; f4; f3 + f4;
   f2 + f3 + f4; all): its two streams start from base models A and B
   (``init_streams``; the SA/CA modules fresh), with the same budget, data and
   seed, and scored on the clean test labels: Dice, ASD, HD.

Rows are aggregated over repetitions (mean ± sample std), flagged when they
collapsed (:func:`~pyseg_noise.training.detect_collapse`; Table 2's reference
is the no-attention baseline trained on the same labels), and written as
Markdown and CSV beside the paper's numbers. Every training is an ordinary
run folder; a stopped reproduction resumes where it stopped when started
again with the same settings.

What the paper leaves open, and what is done here:

* Tables 1 and 2 report HVSMR 2016's *overall score* only (see
  :data:`~pyseg_noise.reproduce.paper_tables.TSMAN_METRIC_NOTE`); our rows
  report Dice, ASD and HD, so only the order of the rows can be compared.
* Table 1 compares "the quality of pseudo labels"; we score the pseudo labels
  of the unlabelled training cases against their clean labels.
* The base network is not named ("three models, with different
  initializations and max iterations"); we use the plain-CE DenseVoxNet
  (TSMAN fine-tunes CE-trained DenseVoxNets), as
  :mod:`pyseg_noise.training.self_training` does for a TSMAN pipeline.
* Table 2's ``xi`` is not stated; ``--ablation-fraction`` (default 0.5).
* HVSMR has three classes (background, myocardium, blood pool); the
  synthetic dataset is generated with 3 classes by default (the chamber and
  a wall ring around it, :mod:`pyseg_noise.data.synthetic`);
  ``--set data.num_classes=2`` generates the binary set. With ``--data`` set
  ``--set data.num_classes=3`` for HVSMR-like labels; metrics are means over
  the foreground classes.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from pyseg_noise.data import open_dataset
from pyseg_noise.training.collapse import detect_collapse
from pyseg_noise.training.config import ConfigError
from pyseg_noise.training.distill import (DD_TRANSFORMS, distillation_variants, read_case_image,
                                          write_pseudo_labels)
from pyseg_noise.training.self_training import make_case_subset, split_cases
from pyseg_noise.training.trainer import load_trained, resolve_device
from pyseg_noise.training.tsman import tsman_departures
from pyseg_noise.training.validation import case_metrics, summarize

from .common import (DataInfo, ReproduceReport, ReproduceSettings, check_seed_and_repeats, prepare_data,
                     reject_foreign, run_config, split_overrides, train_run)
from .paper_tables import TSMAN_METRIC_NOTE, TSMAN_TABLE1, TSMAN_TABLE1_ROWS, TSMAN_TABLE2, TSMAN_TABLE2_ROWS
from .report import (bar_plot, collapse_cell, format_mean_std, markdown_grid, mean_std, write_grid_csv,
                     write_runs_csv)
from .scales import TSMAN_SCALES, TSMANScale, default_scale, tsman_base_iterations

__all__ = ["reproduce_tsman", "TSMANRecord", "TSMANRow", "OVERRIDE_PREFIXES"]

#: ``--set PREFIX:KEY=VALUE`` targets: the base models of the distillation, or Table 2's retrained runs
OVERRIDE_PREFIXES = ("base", "ablation")

#: classes of the generated synthetic dataset (HVSMR's: background, blood pool, myocardium)
SYNTHETIC_CLASSES = 3


def synthetic_classes(settings: ReproduceSettings) -> int:
    """Classes of the synthetic dataset: :data:`SYNTHETIC_CLASSES`, or a common ``--set data.num_classes=N``.

    Raises:
        ConfigError: ``data.num_classes`` other than 2 or 3 for the synthetic data.
    """
    value = SYNTHETIC_CLASSES
    for item in split_overrides(settings.overrides)[0]:
        key, _, raw = item.partition("=")
        if key.strip() == "data.num_classes":
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"data.num_classes must be an int, got {raw!r}") from None
    if settings.data is None and value not in (2, 3):
        raise ConfigError(f"data.num_classes must be 2 or 3 for the synthetic data, got {value}")
    return value


@dataclass
class TSMANRecord:
    """One scored row instance: a pseudo-label variant (Table 1) or a retrained run (Table 2), one repetition.

    ``dice`` is 0-1, distances in voxels (means over the scored cases); ``source`` is the run folder
    (Table 2) or the distillation folder (Table 1).
    """

    table: str
    xi: float
    row: str
    repeat: int
    seed: int
    dice: float
    asd: float
    hd: float
    hd95: float
    fg_pred: float
    fg_ref: float
    cases: int
    seconds: float
    source: str
    collapsed: bool = False
    collapse_reason: str = ""


@dataclass
class TSMANRow:
    """A table row aggregated over repetitions: ``(mean, std)`` of Dice (%), ASD and HD, and the paper's score."""

    table: str
    xi: float
    row: str
    name: str
    dice: Tuple[float, float]
    asd: Tuple[float, float]
    hd: Tuple[float, float]
    n: int
    collapsed: int
    reasons: List[str]
    paper: Optional[float]


# ----------------------------------------------------------------------------- settings
def _check_settings(s: ReproduceSettings) -> Tuple[TSMANScale, List[float], float, int]:
    reject_foreign(s, "tsman")
    scale_name = s.scale or default_scale()
    if scale_name not in TSMAN_SCALES:
        raise ConfigError(f"--scale must be one of {', '.join(TSMAN_SCALES)}, got {scale_name!r}")
    scale = TSMAN_SCALES[scale_name]
    fractions = list(dict.fromkeys(s.labelled_fractions if s.labelled_fractions is not None
                                   else scale.labelled_fractions))
    ablation = s.ablation_fraction if s.ablation_fraction is not None else scale.ablation_fraction
    for xi in fractions:
        if not 0.0 < xi < 1.0:
            raise ConfigError(f"--labelled-fractions must lie strictly between 0 and 1, got {xi}")
    if not 0.0 < ablation < 1.0:
        raise ConfigError(f"--ablation-fraction must lie strictly between 0 and 1, got {ablation}")
    repeats = check_seed_and_repeats(s, scale.repeats)
    unknown = [p for p in split_overrides(s.overrides)[1] if p not in OVERRIDE_PREFIXES]
    if unknown:
        raise ConfigError(f"--set prefix {unknown[0]!r} is not one of {', '.join(OVERRIDE_PREFIXES)} "
                          "(reproduce tsman: base = the distillation's base models, ablation = Table 2's runs)")
    return scale, fractions, ablation, repeats


def _pct(xi: float) -> str:
    return f"{100 * xi:.0f}%"


def _close(a: float, b: float) -> bool:
    return abs(a - b) < 1e-9


def _paper_score(table: str, xi: float, row: str) -> Optional[float]:
    if table == "table2":
        return TSMAN_TABLE2.get(row)
    for paper_xi, rows in TSMAN_TABLE1.items():
        if _close(paper_xi, xi):
            return rows.get(row)
    return None


# ----------------------------------------------------------------------------- one labelled fraction
class _Fraction:
    """Split, base models, distillation (and Table 2's pseudo-label folder) of one ``xi`` in one repetition."""

    def __init__(self, ctx: "_Context", xi: float, repeat: int):
        self.ctx, self.xi, self.repeat = ctx, xi, repeat
        self.seed = ctx.settings.seed + repeat
        self.folder = ctx.out / "runs" / f"rep{repeat}" / f"xi{round(100 * xi)}"

    def split(self) -> Tuple[List[str], List[str]]:
        labelled, unlabelled = split_cases(self.ctx.train_cases, self.xi, self.seed)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "split.json").write_text(json.dumps(
            {"labelled_fraction": self.xi, "seed": self.seed, "labelled": labelled, "unlabelled": unlabelled},
            indent=1))
        return labelled, unlabelled

    def base_models(self, labelled: Sequence[str]) -> Tuple[List[Path], bool]:
        """Train (or reuse) A, B, C on the labelled cases; returns their run folders and whether all were reused."""
        ctx = self.ctx
        subset = make_case_subset(ctx.data.root, labelled, self.folder / "labelled_data", layout=ctx.data.layout)
        runs, all_reused = [], True
        for t, iterations in enumerate(ctx.base_iterations):
            cfg = ctx.config("densevoxnet", ctx.base_options(), self.seed + t, subset, None,
                             [[f"iterations={iterations}"], ctx.per_prefix.get("base", [])])
            run_dir = self.folder / f"base_{'ABC'[t] if t < 3 else t}"
            ctx.say(f"[repeat {self.repeat}] xi {_pct(self.xi)}: base model {'ABC'[t] if t < 3 else t} "
                    f"({cfg.iterations} it, seed {cfg.seed}) on {len(labelled)} labelled cases -> {run_dir}")
            _, seconds, reused = train_run(cfg, run_dir, ctx.settings.overwrite, validate=False)
            ctx.say("    [reused]" if reused else f"    [{seconds:.0f} s]")
            runs.append(run_dir)
            all_reused = all_reused and reused
        return runs, all_reused

    def distill(self, unlabelled: Sequence[str], base_runs: Sequence[Path], reuse: bool):
        """Per-case metrics of every Table 1 variant, and the HD pseudo labels' folder; cached in ``distillation.json``."""
        ctx = self.ctx
        record_file = self.folder / "distillation.json"
        key = {"cases": list(unlabelled), "base_runs": [str(r) for r in base_runs],
               "transforms": [t.name for t in DD_TRANSFORMS], "patch_size": list(ctx.crop_size),
               "stride": list(ctx.stride), "num_classes": ctx.num_classes}
        if reuse and record_file.is_file():
            cached = json.loads(record_file.read_text())
            if cached.get("key") == key and Path(cached["pseudo_dir"]).is_dir():
                ctx.say(f"[repeat {self.repeat}] xi {_pct(self.xi)}: distillation [reused]")
                return cached["metrics"], Path(cached["pseudo_dir"]), 0.0
        started = time.perf_counter()
        ctx.say(f"[repeat {self.repeat}] xi {_pct(self.xi)}: pseudo labels of {len(unlabelled)} unlabelled cases "
                f"(A, B, C, MD, DD x3, HD: {len(base_runs)} models x {len(DD_TRANSFORMS)} transforms)")
        models = [load_trained(r, ctx.device) for r in base_runs]
        metrics: Dict[str, Dict[str, Dict[str, float]]] = {}
        hd_labels: Dict[str, np.ndarray] = {}
        for case in unlabelled:
            image = torch.from_numpy(read_case_image(ctx.data.root, case, layout=ctx.data.layout, split="train"))
            variants = distillation_variants(models, image[None], patch_size=ctx.crop_size, stride=ctx.stride,
                                             batch_size=ctx.val_batch_size)
            clean = ctx.clean_label(case)
            for name, labels in variants.items():
                pred = labels[0].cpu().numpy()
                metrics.setdefault(name, {})[case] = case_metrics(pred, clean, ctx.num_classes)
            hd_labels[case] = variants["hd"][0].cpu().numpy().astype(np.uint8 if ctx.num_classes <= 256 else np.int16)
        del models
        digest = hashlib.sha1()
        for case in sorted(hd_labels):
            digest.update(case.encode())
            digest.update(np.ascontiguousarray(hd_labels[case]).tobytes())
        # the folder name changes with its contents, so Table 2 runs trained on other pseudo labels are not reused
        pseudo_dir = self.folder / f"pseudo_hd_{digest.hexdigest()[:10]}"
        write_pseudo_labels(ctx.data.root, hd_labels, layout=ctx.data.layout, out_dir=pseudo_dir)
        seconds = time.perf_counter() - started
        record_file.write_text(json.dumps({"key": key, "pseudo_dir": str(pseudo_dir), "metrics": metrics,
                                           "seconds": round(seconds, 1)}, indent=1))
        ctx.say(f"    [{seconds:.0f} s] HD pseudo labels -> {pseudo_dir}")
        return metrics, pseudo_dir, seconds


class _Context:
    """What every run of one reproduction shares."""

    def __init__(self, settings: ReproduceSettings, scale: TSMANScale, data: DataInfo, out: Path, say):
        self.settings, self.scale, self.data, self.out, self.say = settings, scale, data, out, say
        self.common, self.per_prefix = split_overrides(settings.overrides)
        self.synthetic_classes = synthetic_classes(settings) if data.synthetic else None
        # validate every kind of run's config before the first training
        probe = self.config("tsman", self.row_options("tsman"), settings.seed, data.root, None,
                            [self.per_prefix.get("ablation", [])])
        self.final_iterations = probe.iterations
        self.base_iterations = tsman_base_iterations(probe.iterations)
        for t, n in enumerate(self.base_iterations):
            self.config("densevoxnet", self.base_options(), settings.seed + t, data.root, None,
                        [[f"iterations={n}"], self.per_prefix.get("base", [])])
        self.departures = tsman_departures(probe.method_options)
        self.crop_size = tuple(probe.data.crop_size)
        self.stride = tuple(probe.val_stride)
        self.val_batch_size = probe.val_batch_size
        self.num_classes = probe.data.num_classes
        self.device = resolve_device(probe.device)
        self._train_set = open_dataset(data.root, "train", layout=data.layout, crop_size=None, augment=False,
                                       normalize=False)
        self.train_cases = list(self._train_set.cases)
        if len(self.train_cases) < 2:
            raise ConfigError(f"reproduce tsman needs at least 2 training cases (a labelled and an unlabelled "
                              f"part), {data.root} has {len(self.train_cases)}")

    def config(self, method: str, options: Dict, seed: int, root: Path, label_dir: Optional[Path],
               extra: Sequence[Sequence[str]]):
        budget = self.scale.config_overrides()
        if self.synthetic_classes is not None:
            budget = {**budget, "data": {**budget.get("data", {}), "num_classes": self.synthetic_classes}}
        return run_config(self.settings, budget, method, options, seed, root, label_dir, [self.common, *extra])

    def base_options(self) -> Dict:
        """The base models' options: DenseVoxNet with the streams' sizes of this scale."""
        return {k: v for k, v in self.scale.method_overrides().items() if k != "subnet"}

    def row_options(self, row: str) -> Dict:
        _, points, loss_attention = TSMAN_TABLE2_ROWS[row]
        return {**self.scale.method_overrides(), "attention_points": list(points), "loss_attention": loss_attention}

    def clean_label(self, case: str) -> np.ndarray:
        return self._train_set[self._train_set.cases.index(case)]["label"].numpy()


def _record(table: str, xi: float, row: str, repeat: int, seed: int, summary: Dict, seconds: float, source: Path,
            reference: Optional[Dict] = None) -> TSMANRecord:
    verdict = detect_collapse(summary, reference,
                              reference_name="the no-attention baseline trained on the same labels")
    return TSMANRecord(table=table, xi=xi, row=row, repeat=repeat, seed=seed, dice=float(summary["dice"]),
                       asd=float(summary["asd"]), hd=float(summary.get("hd", math.nan)),
                       hd95=float(summary["hd95"]), fg_pred=float(summary["fg_pred"]),
                       fg_ref=float(summary["fg_ref"]), cases=int(summary.get("cases", 0)),
                       seconds=round(seconds, 1), source=str(source), collapsed=verdict.collapsed,
                       collapse_reason=verdict.reason)


def _say_record(say, rec: TSMANRecord, label: str, reused: Optional[bool] = None) -> None:
    say(f"    {label}: Dice {100 * rec.dice:.2f}%  ASD {rec.asd:.2f}  HD {rec.hd:.2f}  foreground "
        f"{100 * rec.fg_pred:.2f}% (clean labels {100 * rec.fg_ref:.2f}%)"
        + ("" if reused is None else ("  [reused]" if reused else f"  [{rec.seconds:.0f} s]"))
        + (f"  COLLAPSED: {rec.collapse_reason}" if rec.collapsed else ""))


# ----------------------------------------------------------------------------- the protocol
def reproduce_tsman(settings: ReproduceSettings, *, print_fn: Callable[[str], None] = print) -> ReproduceReport:
    """Run TSMAN's Table 1 and Table 2 protocol (module docstring); return, print and write both tables.

    Outputs in ``settings.out`` (default ``tsman_reproduction``): ``table1.md``/``.csv`` (distillation),
    ``table2.md``/``.csv`` (attention ablation), ``runs.csv``, ``report.json``, ``plots/table1_dice.png``,
    ``plots/table2_dice.png``, ``data/`` (synthetic data) and ``runs/rep<r>/xi<pct>/`` (split, labelled-case
    dataset, base models, ``distillation.json``, HD pseudo labels, ``ablation/<row>`` run folders).

    Raises:
        ConfigError / FileNotFoundError: bad settings or data (before any training).
    """
    started = time.perf_counter()
    scale, fractions, ablation_xi, repeats = _check_settings(settings)
    out = Path(settings.out or "tsman_reproduction")
    out.mkdir(parents=True, exist_ok=True)
    say = print_fn
    data = prepare_data(settings, scale.shape, scale.n_train, scale.n_test, out, say,
                        num_classes=synthetic_classes(settings) if settings.data is None else 2)
    ctx = _Context(settings, scale, data, out, say)
    all_fractions = fractions + [x for x in [ablation_xi] if not any(_close(x, f) for f in fractions)]

    header = _header(settings, scale, data, ctx, all_fractions, ablation_xi, repeats)
    for line in header:
        say(line)

    records: List[TSMANRecord] = []
    for r in range(repeats):
        seed = settings.seed + r
        for xi in all_fractions:
            part = _Fraction(ctx, xi, r)
            labelled, unlabelled = part.split()
            say(f"[repeat {r}] xi {_pct(xi)}: {len(labelled)} labelled / {len(unlabelled)} unlabelled training cases")
            base_runs, reused = part.base_models(labelled)
            metrics, pseudo_dir, seconds = part.distill(unlabelled, base_runs, reuse=reused)
            for row in TSMAN_TABLE1_ROWS:
                rows = [{"case": c, **m} for c, m in metrics[row].items()]
                rec = _record("table1", xi, row, r, seed, summarize(rows), seconds, part.folder)
                records.append(rec)
                _say_record(say, rec, f"{TSMAN_TABLE1_ROWS[row]:<13}")
            if _close(xi, ablation_xi):
                records += _ablation(ctx, part, pseudo_dir, base_runs, r, seed)

    t1 = _aggregate([x for x in records if x.table == "table1"], "table1")
    t2 = _aggregate([x for x in records if x.table == "table2"], "table2")
    table1, table2 = _table1_markdown(t1), _table2_markdown(t2)
    verdicts, warnings = _conclusions(t1, t2)
    seconds = time.perf_counter() - started
    kind = "user data" if settings.data else "synthetic data"
    titles = (f"TSMAN Table 1 (distillation) — {scale.name} scale, {kind}",
              f"TSMAN Table 2 (attention ablation) — {scale.name} scale, {kind}")
    for name, title, table in (("table1", titles[0], table1), ("table2", titles[1], table2)):
        (out / f"{name}.md").write_text("\n".join(["# " + title, "", *header, "", table, "", *verdicts, *warnings,
                                                   ""]))
    _write_csvs(t1, t2, out)
    write_runs_csv(records, out / "runs.csv")
    bar_plot([f"{_pct(r.xi)}\n{r.name}" for r in t1], [r.dice for r in t1], out / "plots" / "table1_dice.png",
             titles[0], colors=["tab:red" if r.collapsed else "tab:blue" for r in t1],
             ylabel="Dice (%) of the pseudo labels")
    bar_plot([r.name.replace(" (", "\n(") for r in t2], [r.dice for r in t2], out / "plots" / "table2_dice.png",
             titles[1], colors=["tab:red" if r.collapsed else "tab:blue" for r in t2],
             ylabel="Dice (%) on the clean test labels")
    (out / "report.json").write_text(json.dumps({
        "scale": scale.name, "data": data.description, "labelled_fractions": fractions,
        "ablation_fraction": ablation_xi, "repeats": repeats, "base_iterations": list(ctx.base_iterations),
        "iterations": ctx.final_iterations, "seconds": round(seconds, 1), "verdicts": verdicts, "warnings": warnings,
        "runs": [asdict(x) for x in records]}, indent=1, default=str))
    say("")
    say(titles[0] + " — pseudo labels of the unlabelled training cases against their clean labels")
    say(table1)
    say("")
    say(titles[1] + f" — retrained on manual + HD pseudo labels (xi {_pct(ablation_xi)}), clean test labels")
    say(table2)
    say("")
    for line in verdicts + warnings:
        say(line)
    say(f"wall time {seconds / 60:.1f} min; tables, plots and run folders in {out}")
    return ReproduceReport(records, table1 + "\n\n" + table2, header, warnings, verdicts, out, seconds,
                           tables={"table1": table1, "table2": table2})


def _ablation(ctx: _Context, part: _Fraction, pseudo_dir: Path, base_runs: Sequence[Path], repeat: int,
              seed: int) -> List[TSMANRecord]:
    """Table 2: the five attention configurations fine-tuned from base models A and B on manual + HD pseudo labels."""
    records: List[TSMANRecord] = []
    baseline = None
    init = [str(base_runs[0]), str(base_runs[1])] if len(base_runs) >= 2 else None
    for row, (name, _, _) in TSMAN_TABLE2_ROWS.items():
        options = {**ctx.row_options(row), **({"init_streams": init} if init else {})}
        cfg = ctx.config("tsman", options, seed, ctx.data.root, pseudo_dir, [ctx.per_prefix.get("ablation", [])])
        run_dir = part.folder / "ablation" / row.replace("+", "_")
        ctx.say(f"[repeat {repeat}] Table 2: fine-tuning {name} from base models A and B on manual + HD pseudo "
                f"labels -> {run_dir}")
        summary, seconds, reused = train_run(cfg, run_dir, ctx.settings.overwrite)
        rec = _record("table2", part.xi, row, repeat, seed, summary, seconds, run_dir,
                      None if row == "baseline" else baseline)
        if row == "baseline":
            baseline = summary
        records.append(rec)
        _say_record(ctx.say, rec, "test", reused)
    return records


def _header(settings, scale, data, ctx, fractions, ablation_xi, repeats) -> List[str]:
    n = len(ctx.train_cases)
    if data.synthetic and ctx.num_classes == 3:
        classes = ("classes: 3 — a chamber (\"blood pool\") and a wall ring around it (\"myocardium\"), as "
                   "HVSMR's; Dice/ASD/HD are means over the two foreground classes")
    elif data.synthetic:
        classes = ("classes: 2 — binary labels (data.num_classes=2; HVSMR has myocardium and blood pool, "
                   "3 classes)")
    else:
        classes = (f"classes: {ctx.num_classes} (data.num_classes; HVSMR: 3) — Dice/ASD/HD are means over the "
                   "foreground classes")
    lines = [
        f"TSMAN Tables 1 and 2 reproduction — scale: {scale.name} ({scale.summary})",
        f"data: {data.description}",
        classes,
        f"Table 1: for xi = {', '.join(_pct(x) for x in fractions)} of the {n} training cases with manual labels, "
        f"base models A, B, C (plain-CE DenseVoxNets, seeds s..s+2, {'/'.join(map(str, ctx.base_iterations))} it) "
        "are trained on "
        "them; the other cases get pseudo labels from each model, MD, DD (12 transforms) and HD, scored against "
        "their clean labels",
        f"Table 2: the five attention configurations fine-tuned from base models A and B (fresh SA/CA modules) on "
        f"manual + HD pseudo labels at xi = {_pct(ablation_xi)} (not stated in the paper), {ctx.final_iterations} "
        "it each, scored on the clean test labels",
        f"metric: {TSMAN_METRIC_NOTE}",
        f"repetitions: {repeats} (seeds {settings.seed}..{settings.seed + repeats - 1}); device: {ctx.device}",
    ]
    for line in ctx.departures:
        lines.append(f"NOT IN THE PAPER (opt-in): {line}")
    if settings.overrides:
        lines.append(f"overrides: {' '.join(settings.overrides)}")
    return lines


# ----------------------------------------------------------------------------- tables
def _aggregate(records: Sequence[TSMANRecord], table: str) -> List[TSMANRow]:
    order = list(TSMAN_TABLE1_ROWS if table == "table1" else TSMAN_TABLE2_ROWS)
    groups: Dict[Tuple[float, str], List[TSMANRecord]] = {}
    for x in records:
        groups.setdefault((round(x.xi, 6), x.row), []).append(x)
    rows = []
    for xi, row in sorted(groups, key=lambda k: (k[0], order.index(k[1]))):
        runs = groups[(xi, row)]
        name = TSMAN_TABLE1_ROWS[row] if table == "table1" else TSMAN_TABLE2_ROWS[row][0]
        rows.append(TSMANRow(
            table=table, xi=xi, row=row, name=name,
            dice=mean_std([100.0 * x.dice for x in runs]), asd=mean_std([x.asd for x in runs]),
            hd=mean_std([x.hd for x in runs]), n=len(runs), collapsed=sum(x.collapsed for x in runs),
            reasons=[f"repeat {x.repeat}: {x.collapse_reason}" for x in runs if x.collapsed],
            paper=_paper_score(table, xi, row)))
    return rows


def _score(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.3f}"


def _table1_markdown(rows: Sequence[TSMANRow]) -> str:
    header = ["xi (labelled)", "Pseudo labels", "Dice % (ours)", "ASD vox (ours)", "HD vox (ours)",
              "Overall score (paper)", "Runs", "Collapse"]
    return markdown_grid(header, [[_pct(r.xi), r.name, format_mean_std(*r.dice), format_mean_std(*r.asd),
                                   format_mean_std(*r.hd), _score(r.paper), str(r.n), collapse_cell(r.collapsed, r.n)]
                                  for r in rows])


def _table2_markdown(rows: Sequence[TSMANRow]) -> str:
    header = ["Attention", "f1", "f2", "f3", "f4", "Dice % (ours)", "ASD vox (ours)", "HD vox (ours)",
              "Overall score (paper)", "Runs", "Collapse"]
    cells = []
    for r in rows:
        _, points, f4 = TSMAN_TABLE2_ROWS[r.row]
        marks = ["✓" if p in points else "" for p in ("f1", "f2", "f3")] + ["✓" if f4 else ""]
        cells.append([r.name, *marks, format_mean_std(*r.dice), format_mean_std(*r.asd), format_mean_std(*r.hd),
                      _score(r.paper), str(r.n), collapse_cell(r.collapsed, r.n)])
    return markdown_grid(header, cells)


def _write_csvs(t1: Sequence[TSMANRow], t2: Sequence[TSMANRow], out: Path) -> None:
    numbers = ["dice_pct", "dice_pct_std", "asd", "asd_std", "hd", "hd_std", "paper_overall_score", "runs",
               "collapsed_runs"]
    write_grid_csv(out / "table1.csv", ["xi", "row", "name", *numbers],
                   [[r.xi, r.row, r.name, *r.dice, *r.asd, *r.hd, r.paper, r.n, r.collapsed] for r in t1])
    rows = []
    for r in t2:
        _, points, f4 = TSMAN_TABLE2_ROWS[r.row]
        rows.append([r.xi, r.row, r.name, *(p in points for p in ("f1", "f2", "f3")), f4, *r.dice, *r.asd, *r.hd,
                     r.paper, r.n, r.collapsed])
    write_grid_csv(out / "table2.csv", ["xi", "row", "name", "f1", "f2", "f3", "f4", *numbers], rows)


def _conclusions(t1: Sequence[TSMANRow], t2: Sequence[TSMANRow]) -> Tuple[List[str], List[str]]:
    verdicts, warnings = [], []
    for xi in sorted({r.xi for r in t1}):
        by = {r.row: r for r in t1 if r.xi == xi}
        if "hd" not in by:
            continue
        others = [r for k, r in by.items() if k != "hd"]
        best = max(others, key=lambda r: r.dice[0])
        hd = by["hd"]
        paper = TSMAN_TABLE1.get(next((p for p in TSMAN_TABLE1 if _close(p, xi)), -1.0))
        paper_txt = ""
        if paper:
            paper_best = max((k for k in paper if k != "hd"), key=paper.get)
            paper_txt = (" (paper: HD has the best score" if paper["hd"] > paper[paper_best] else
                         " (paper: HD does not have the best score") + f" at xi {_pct(xi)})"
        verdict = "is the best pseudo label" if hd.dice[0] > best.dice[0] else "is NOT the best pseudo label"
        verdicts.append(f"Table 1, xi {_pct(xi)}: HD {verdict} by Dice: {hd.dice[0]:.2f}% vs {best.dice[0]:.2f}% for "
                        f"the best other ({best.name}){paper_txt}.")
        dds = [by[k] for k in ("dd0", "dd1", "dd2") if k in by]
        if "md" in by and dds:
            best_dd = max(dds, key=lambda r: r.dice[0])
            cmp = ">" if by["md"].dice[0] > best_dd.dice[0] else "<="
            paper_cmp = ""
            if paper:
                paper_cmp = "; paper: MD " + (">" if paper["md"] > max(paper[k] for k in ("dd0", "dd1", "dd2"))
                                              else "<=") + " best DD"
            verdicts.append(f"Table 1, xi {_pct(xi)}: MD {by['md'].dice[0]:.2f}% {cmp} best DD "
                            f"{best_dd.dice[0]:.2f}% ({best_dd.name}){paper_cmp}.")
        singles = [by[k] for k in ("model0", "model1", "model2") if k in by]
        if singles and max(r.dice[0] for r in singles) < 50.0:
            warnings.append(f"WARNING: at xi {_pct(xi)} the best base model reaches only "
                            f"{max(r.dice[0] for r in singles):.1f}% Dice: the budget is too small for the "
                            "distillation comparison to mean much.")
    by2 = {r.row: r for r in t2}
    keys = [k for k in TSMAN_TABLE2_ROWS if k in by2]
    if len(keys) >= 2:
        steps = []
        for prev, cur in zip(keys, keys[1:]):
            steps.append(f"{cur} {by2[cur].dice[0] - by2[prev].dice[0]:+.2f}")
        improved = sum(by2[c].dice[0] > by2[p].dice[0] for p, c in zip(keys, keys[1:]))
        verdicts.append(f"Table 2: adding the attentions one at a time changes Dice by {', '.join(steps)} points "
                        f"({improved} of {len(keys) - 1} steps improve; paper: the score improves at every step).")
    if "baseline" in by2 and "tsman" in by2:
        diff = by2["tsman"].dice[0] - by2["baseline"].dice[0]
        verdicts.append(f"Table 2: TSMAN (all attentions) {'beats' if diff > 0 else 'does NOT beat'} the "
                        f"no-attention baseline on Dice: {by2['tsman'].dice[0]:.2f}% vs {by2['baseline'].dice[0]:.2f}% "
                        f"({diff:+.2f} points; paper: overall score {TSMAN_TABLE2['tsman']:.3f} vs "
                        f"{TSMAN_TABLE2['baseline']:.3f}).")
        if not math.isinf(by2["baseline"].dice[0]) and by2["baseline"].dice[0] < 50.0:
            warnings.append(f"WARNING: the no-attention baseline reaches only {by2['baseline'].dice[0]:.1f}% Dice: "
                            "the budget is too small for the ablation to mean much.")
    for r in list(t1) + list(t2):
        if r.collapsed:
            where = f"Table 1 {r.name} at xi {_pct(r.xi)}" if r.table == "table1" else f"Table 2 {r.name}"
            warnings.append(f"WARNING: {where} collapsed in {r.collapsed} of {r.n} runs: " + "; ".join(r.reasons))
    return verdicts, warnings
