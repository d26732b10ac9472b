"""What every ``pyseg-noise reproduce NAME`` shares: its settings, its data, one training run.

* :class:`ReproduceSettings` — the command line's settings. Some belong to one
  paper (PINT's noise rates, TSMAN's labelled fractions); a reproduction
  refuses the other paper's with one clear error (:func:`reject_foreign`).
* :func:`prepare_data` — a user's ``--data`` folder (only read) or the
  synthetic LA-like dataset generated into the output folder (reused when its
  settings match).
* :func:`split_overrides` / :func:`run_config` — ``--set [PREFIX:]KEY=VALUE``
  over a scale's budget.
* :func:`train_run` — one Trainer run folder: a finished run of the same
  settings is reused, an interrupted one resumed, so a stopped reproduction
  picks up where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml

from pyseg_noise.data import detect_layout, generate_synthetic_dataset, open_dataset
from pyseg_noise.training.checkpoint import checkpoint_path, load_checkpoint
from pyseg_noise.training.config import ConfigError, config_from_dict, merge_dicts, parse_overrides
from pyseg_noise.training.trainer import Trainer, config_differences

__all__ = ["ReproduceSettings", "ReproduceReport", "DataInfo", "prepare_data", "split_overrides", "run_config",
           "train_run", "reject_foreign", "check_seed_and_repeats"]


@dataclass
class ReproduceSettings:
    """What ``pyseg-noise reproduce NAME`` was asked to do (None = the scale's default).

    Attributes:
        out: output folder (tables, plots, logs, one run folder per training run);
            None = ``<name>_reproduction``.
        scale: ``"smoke"``, ``"cpu"`` or ``"paper"`` (default: paper with a GPU, else cpu).
        data: dataset folder; None generates the synthetic dataset.
        repeats: repetitions (seeds ``seed .. seed + repeats - 1``).
        seed: base seed.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        overrides: ``KEY=VALUE`` config overrides for every run; ``PREFIX:KEY=VALUE`` for some
            (PINT: a method name; TSMAN: ``base`` or ``ablation``).
        overwrite: discard runs of different settings found in ``out``.
        progress: progress bars.
        num_workers: DataLoader workers per run (None = the scale's).
        methods: PINT only — methods trained on noisy labels besides the V-Net.
        noise_rates: PINT only — shares of noisy training cases.
        radius_range: PINT only — erosion/dilation radii; None = paper's 5-18 on user data,
            scaled on synthetic data.
        labelled_fractions: TSMAN only — the ``xi`` values of Table 1 (share of training
            cases with manual labels).
        ablation_fraction: TSMAN only — the ``xi`` of Table 2's retraining.
        jobs: PINT only — trainings run at once in worker processes, each with
            ``cores // jobs`` torch threads (None or 1: one after the other in this process).
    """

    out: Optional[str] = None
    scale: Optional[str] = None
    data: Optional[str] = None
    repeats: Optional[int] = None
    seed: int = 0
    device: str = "auto"
    overrides: List[str] = field(default_factory=list)
    overwrite: bool = False
    progress: bool = True
    num_workers: Optional[int] = None
    methods: Optional[List[str]] = None
    noise_rates: Optional[List[float]] = None
    radius_range: Optional[Tuple[int, int]] = None
    labelled_fractions: Optional[List[float]] = None
    ablation_fraction: Optional[float] = None
    jobs: Optional[int] = None


#: the settings that belong to one paper: field -> (paper, command-line option)
PAPER_ONLY = {
    "methods": ("pint", "--methods"),
    "noise_rates": ("pint", "--noise-rates"),
    "radius_range": ("pint", "--radius-range"),
    "labelled_fractions": ("tsman", "--labelled-fractions"),
    "ablation_fraction": ("tsman", "--ablation-fraction"),
    "jobs": ("pint", "--jobs"),
}


@dataclass
class ReproduceReport:
    """The outcome: per-run records, the table(s) (Markdown), and the lines printed around them."""

    records: List[Any]
    table: str
    header: List[str]
    warnings: List[str]
    verdicts: List[str]
    out: Path
    seconds: float
    tables: Dict[str, str] = field(default_factory=dict)


def reject_foreign(settings: ReproduceSettings, paper: str) -> None:
    """Raise :class:`ConfigError` for a setting that belongs to another paper's reproduction."""
    for name, (owner, option) in PAPER_ONLY.items():
        if owner != paper and getattr(settings, name) is not None:
            raise ConfigError(f"{option} belongs to `reproduce {owner}`, not `reproduce {paper}`")


def check_seed_and_repeats(settings: ReproduceSettings, default_repeats: int) -> int:
    """The number of repetitions; raises :class:`ConfigError` for a negative seed or fewer than 1 repeat."""
    repeats = settings.repeats if settings.repeats is not None else default_repeats
    if repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {repeats}")
    if settings.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {settings.seed}")
    return repeats


def split_overrides(items: Sequence[str]) -> Tuple[List[str], Dict[str, List[str]]]:
    """``(common, {prefix: items})`` from ``KEY=VALUE`` and ``PREFIX:KEY=VALUE`` items."""
    common: List[str] = []
    per_prefix: Dict[str, List[str]] = {}
    for item in items:
        key = item.split("=", 1)[0]
        if ":" in key:
            prefix, rest = item.split(":", 1)
            per_prefix.setdefault(prefix.strip(), []).append(rest)
        else:
            common.append(item)
    return common, per_prefix


@dataclass
class DataInfo:
    """The dataset a reproduction runs on.

    Attributes:
        root: the dataset folder.
        layout: ``"h5"`` or ``"nifti"``.
        description: one line for the output ("data: ...").
        synthetic: generated here (no ``--data``).
        foreground_fraction: mean foreground share of the training labels (synthetic data only).
    """

    root: Path
    layout: str
    description: str
    synthetic: bool
    foreground_fraction: Optional[float] = None


def prepare_data(settings: ReproduceSettings, shape: Sequence[int], n_train: int, n_test: int, out: Path,
                 say: Callable[[str], None], num_classes: int = 2) -> DataInfo:
    """Check the user's ``--data`` or generate (or reuse) the synthetic dataset in ``out/data``.

    Args:
        settings: ``data`` and ``seed`` are read.
        shape, n_train, n_test: the synthetic dataset's size (the scale's).
        num_classes: of the synthetic dataset (2: binary; 3: chamber + wall ring, TSMAN's default).
        out: the reproduction's folder.
        say: where progress lines go.

    Raises:
        FileNotFoundError: ``--data`` is not a folder.
        ConfigError: ``--data`` has no training split or no test split with labels.
    """
    if settings.data is not None:
        root = Path(settings.data)
        if not root.is_dir():
            raise FileNotFoundError(f"--data folder not found: {root}")
        try:
            layout = detect_layout(root)
            train = open_dataset(root, "train", layout=layout, crop_size=None, augment=False)
            test = open_dataset(root, "test", layout=layout, crop_size=None, augment=False)
        except (ValueError, FileNotFoundError) as exc:
            raise ConfigError(f"--data {root}: {exc} (reproduce needs a training split and a test split with "
                              "clean labels)") from exc
        desc = f"{root} ({layout}, {len(train)} training / {len(test)} test cases, clean test labels)"
        return DataInfo(root, layout, desc, synthetic=False)
    root = out / "data"
    wanted = {"seed": settings.seed, "shape": list(shape), "n_train": n_train, "n_test": n_test}
    marker = root / "synthetic.json"
    info = None
    if marker.is_file():
        old = json.loads(marker.read_text())
        if {k: old.get(k) for k in wanted} == wanted and old.get("num_classes", 2) == num_classes:
            info = old
    if info is None:
        say(f"generating the synthetic dataset: {n_train} training + {n_test} test volumes of "
            f"{'x'.join(map(str, shape))} ...")
        gen = generate_synthetic_dataset(root, n_train=n_train, n_test=n_test, shape=tuple(shape),
                                         seed=settings.seed, num_classes=num_classes, overwrite=True)
        fractions = [gen["foreground_fraction"][c] for c in gen["train"]]
        info = {**json.loads(marker.read_text()), "mean_train_foreground": float(np.mean(fractions))}
        marker.write_text(json.dumps(info, indent=1))
    fg = float(info.get("mean_train_foreground", 0.075))
    kind = "LA-like" if num_classes == 2 else f"{num_classes}-class (chamber + wall ring)"
    desc = (f"synthetic {kind} volumes generated in {root} ({n_train} training / {n_test} test, "
            f"{'x'.join(map(str, shape))}, {100 * fg:.1f}% foreground, seed {settings.seed})")
    return DataInfo(root, "h5", desc, synthetic=True, foreground_fraction=fg)


def run_config(settings: ReproduceSettings, budget: Mapping[str, Any], method: str, method_options: Mapping,
               seed: int, data_root: Path, label_dir: Optional[Path], overrides: Sequence[Sequence[str]] = ()):
    """One run's :class:`~pyseg_noise.training.TrainConfig`: paper defaults <- the scale's ``budget`` <- settings
    <- ``overrides`` (lists of ``KEY=VALUE``, applied in order).

    ``label_dir`` (a folder of per-case label files) replaces the training labels it holds.
    """
    values = merge_dicts({"method": method, "seed": seed, "device": settings.device, "progress": settings.progress,
                          "data": {"root": str(data_root)}, "method_options": dict(method_options)}, dict(budget))
    if settings.num_workers is not None:
        values = merge_dicts(values, {"data": {"num_workers": settings.num_workers}})
    if label_dir is not None:
        values = merge_dicts(values, {"data": {"label_overrides": str(label_dir)}})
    for items in overrides:
        if items:
            values = merge_dicts(values, parse_overrides(list(items)))
    return config_from_dict(values)


def _train_in_worker(config, run_dir: Path, overwrite: bool, threads: int) -> float:
    torch.set_num_threads(threads)
    return train_run(config, run_dir, overwrite)[1]


def train_runs_in_parallel(runs: Sequence[Tuple[Any, Path]], overwrite: bool, jobs: int,
                           say: Callable[[str], None]) -> Dict[str, float]:
    """Train ``runs`` (``(config, run_dir)`` pairs, each independent of the others) in ``jobs``
    worker processes of ``cores // jobs`` torch threads each; returns ``{run_dir: seconds}`` of the
    runs trained (finished runs are skipped). A failing run raises its error here, after the
    runs already started have ended.
    """
    import concurrent.futures as futures
    import multiprocessing
    import os

    threads = max(1, (os.cpu_count() or 1) // jobs)
    seconds: Dict[str, float] = {}
    todo = [(c, d) for c, d in runs if not (d / "eval" / "summary.json").is_file()]
    if not todo:
        return seconds
    say(f"training {len(todo)} runs in {jobs} worker processes ({threads} torch thread(s) each)")
    with futures.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = {pool.submit(_train_in_worker, dataclasses.replace(c, progress=False), d, overwrite, threads): d
                   for c, d in todo}
        for done in futures.as_completed(pending):
            run_dir = pending[done]
            seconds[str(run_dir)] = done.result()
            say(f"    finished {run_dir} [{seconds[str(run_dir)]:.0f} s]")
    return seconds


def train_run(config, run_dir: Path, overwrite: bool, *, validate: bool = True) -> Tuple[Optional[dict], float, bool]:
    """Train (or reuse a finished run / resume an interrupted one); returns ``(summary, seconds, reused)``.

    ``validate=False`` skips the test-set evaluation (the summary is then None).

    Raises:
        ConfigError: ``run_dir`` holds a run of other settings and ``overwrite`` is false, or the run
            could not be evaluated (no test split with clean labels).
    """
    summary_file = run_dir / "eval" / "summary.json"
    config_file = run_dir / "config.yaml"
    checkpoint = checkpoint_path(run_dir)
    resume = False
    if config_file.is_file():
        old = yaml.safe_load(config_file.read_text())
        diffs = config_differences(old, config.to_dict())
        if not diffs and summary_file.is_file():
            return json.loads(summary_file.read_text()), 0.0, True
        if not diffs and not validate and checkpoint.is_file() and load_checkpoint(checkpoint).get("finished"):
            return None, 0.0, True
        if not diffs and checkpoint.is_file():
            resume = True
        elif diffs and not overwrite:
            raise ConfigError(f"{run_dir} holds a run with other settings ({', '.join(diffs[:4])}); "
                              "use another --out or pass --overwrite")
        elif diffs:
            shutil.rmtree(run_dir)
    started = time.perf_counter()
    result = Trainer(config, run_dir, resume=resume, overwrite=overwrite and not resume, validate=validate).fit()
    if validate and result.summary is None:
        raise ConfigError(f"the run in {run_dir} could not be evaluated: no test split with clean labels")
    return result.summary, time.perf_counter() - started, False
