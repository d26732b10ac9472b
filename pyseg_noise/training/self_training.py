"""TSMAN's semi-supervised self-training (Min et al. 2019, Fig. 1 and "Implementation Details").

The training cases are split into a labelled part (share ``xi``, manual
labels) and an unlabelled part. Then:

1. **base models** — ``T`` models (TSMAN: 3, with different initialisations
   and 10,000 / 15,000 / 20,000 iterations) are trained on the labelled part
   only (``base_method``, seeds ``seed``, ``seed + 1``, ...). For a TSMAN
   pipeline they are DenseVoxNets trained with plain CE and deep supervision
   (:mod:`pyseg_noise.training.densevoxnet`, the sizes of TSMAN's streams):
   the paper's "Baseline" without any attention;
2. **distillation** — the unlabelled part gets pseudo labels by model, data or
   hierarchical distillation (:mod:`pyseg_noise.training.distill`, whole
   volumes by sliding window);
3. **retraining** — the final method (TSMAN) is trained on all training cases:
   manual labels on the labelled part, pseudo labels on the rest (which carry
   the noise TSMAN is built to tolerate). TSMAN fine-tunes: its two streams
   start from base models 0 and 1 (two different CE-trained DenseVoxNets,
   ``method_options.init_streams``) and train with the mutual attentions and
   f4 from the first iteration (``init_from_base``).

Run it with ``pyseg-noise self-train --config tsman.yaml --data DIR --out DIR``
(:func:`load_self_training` reads the settings) or :func:`run_self_training`.
Everything lands in one folder, and a stopped pipeline resumes where it stopped
(finished runs are reused, an unfinished run is resumed from its checkpoint)::

    split.json             labelled / unlabelled cases (seeded by split_seed)
    labelled_data/         the labelled cases as a dataset of their own (symbolic links)
    base_0/ base_1/ ...    Trainer run folders of the base models
    pseudo_labels/         <case>.h5 / <case>.nii.gz for the unlabelled cases (data.label_overrides)
    pseudo_labels/quality.json   Dice of each pseudo label against the dataset's clean label
    final/                 Trainer run folder of the retrained method
    self_training.json     the summary

Choices: the paper does not name the base network ("three models, with
different initializations and max iterations"); TSMAN fine-tunes CE-trained
DenseVoxNets and Table 2's "Baseline" is the network without attention, so
the base models of a ``tsman`` pipeline are ``densevoxnet`` runs with the
streams' sizes; for another final method they default to that method with
its options. ``base_method: vnet`` trains plain V-Nets instead. The labelled cases keep the
run's configured training labels (clean by default; ``data.noisy_labels``
applies to them too). The validation split is the dataset's test split for
every run.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from pyseg_noise.data import (detect_layout, find_case_list, la_case_path, la_case_root,
                              read_case_list, read_dataset_json, training_case_names, write_pseudo_labels)
from pyseg_noise.data.volume_io import read_h5, read_volume
from pyseg_noise.metrics import dice

from .checkpoint import checkpoint_path, load_checkpoint
from .config import (ConfigError, TrainConfig, config_from_dict, dataclass_from_dict, merge_dicts, parse_overrides,
                     read_yaml)
from .densevoxnet import DENSEVOXNET_SIZE_KEYS
from .distill import DISTILLATION_METHODS, data_distillation_transforms, distill_dataset
from .run_data import label_override_paths
from .trainer import Trainer, TrainResult, load_trained

__all__ = ["SelfTrainingConfig", "SelfTrainingResult", "split_cases", "make_case_subset", "run_self_training",
           "load_self_training", "pseudo_label_quality", "base_model_method", "fine_tuning_streams"]

PathLike = Union[str, Path]


@dataclass
class SelfTrainingConfig:
    """The pipeline's own settings (defaults: TSMAN's).

    Attributes:
        labelled_fraction: ``xi``, the share of training cases with manual labels (0 < xi < 1).
        split_seed: seeds which cases are labelled.
        base_method: registered method of the base models (None = ``densevoxnet`` with the
            streams' sizes for a ``tsman`` pipeline, else the final method).
        base_method_options: options of ``base_method`` when it differs from the final
            method (a mapping; defaults otherwise, and the DenseVoxNet sizes of the final
            TSMAN for ``densevoxnet``).
        init_from_base: a final TSMAN fine-tunes base models 0 and 1 (``init_streams``; needs
            ``densevoxnet`` base models and ``T >= 2``); False trains it from scratch (stage 1 first).
        base_iterations: one entry per base model (``T`` = its length): 10000, 15000, 20000.
        distillation: ``"hd"`` (default), ``"md"`` or ``"dd"`` (``dd`` uses base model 0).
        flip_axes: flips combined with the 4 in-plane rotations (None = no flip; 0 = X, 1 = Y, 2 = Z).
        patch_size, stride: sliding window of the distillation (None = ``data.crop_size`` /
            ``val_stride`` of the run).
        validate_base: evaluate each base model on the validation split.
    """

    labelled_fraction: float = 0.5
    split_seed: int = 0
    base_method: Optional[str] = None
    base_method_options: Dict[str, Any] = field(default_factory=dict)
    base_iterations: List[int] = field(default_factory=lambda: [10000, 15000, 20000])
    distillation: str = "hd"
    flip_axes: List[Optional[int]] = field(default_factory=lambda: [None, 0, 1])
    patch_size: Optional[List[int]] = None
    stride: Optional[List[int]] = None
    validate_base: bool = False
    init_from_base: bool = True

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first bad setting."""
        if not 0.0 < self.labelled_fraction < 1.0:
            raise ConfigError(f"labelled_fraction must be in (0, 1), got {self.labelled_fraction}")
        if not self.base_iterations or any(int(n) < 1 for n in self.base_iterations):
            raise ConfigError(f"base_iterations must be positive ints, one per base model, got {self.base_iterations}")
        if self.distillation not in DISTILLATION_METHODS:
            raise ConfigError(f"distillation must be one of {', '.join(DISTILLATION_METHODS)}, got {self.distillation!r}")
        try:
            data_distillation_transforms(self.flip_axes)
        except ValueError as exc:
            raise ConfigError(f"flip_axes: {exc}") from exc
        for key in ("patch_size", "stride"):
            v = getattr(self, key)
            if v is not None and (len(v) != 3 or min(v) < 1):
                raise ConfigError(f"{key} must be three positive ints or null, got {v}")


@dataclass
class SelfTrainingResult:
    """What :func:`run_self_training` did.

    Attributes:
        run_dir: the pipeline folder.
        labelled, unlabelled: the case split.
        base_runs: run folders of the base models.
        pseudo_labels: ``{case: file}`` of the written pseudo labels.
        pseudo_dice: ``{case: Dice}`` of each pseudo label against the clean label (empty if unknown).
        final: the retraining's :class:`~pyseg_noise.training.TrainResult`.
    """

    run_dir: Path
    labelled: List[str]
    unlabelled: List[str]
    base_runs: List[Path]
    pseudo_labels: Dict[str, str]
    pseudo_dice: Dict[str, float]
    final: Any


# ----------------------------------------------------------------------------- the case split
def split_cases(cases: Sequence[str], fraction: float, seed: int) -> tuple:
    """``(labelled, unlabelled)``: ``round(fraction * N)`` cases (at least 1, at most N - 1) drawn by ``seed``.

    Both lists keep the order of ``cases``.

    Raises:
        ConfigError: fewer than two cases.
    """
    cases = list(cases)
    if len(cases) < 2:
        raise ConfigError(f"self-training needs at least 2 training cases, got {len(cases)}")
    n = min(max(int(round(fraction * len(cases))), 1), len(cases) - 1)
    chosen = set(np.random.default_rng(seed).permutation(len(cases))[:n].tolist())
    return [c for i, c in enumerate(cases) if i in chosen], [c for i, c in enumerate(cases) if i not in chosen]


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        if dst.is_symlink() and os.readlink(dst) == str(src.resolve()):
            return
        dst.unlink()
    os.symlink(src.resolve(), dst)


def make_case_subset(root: PathLike, cases: Sequence[str], out: PathLike, *, layout: str,
                     noisy_labels: Optional[str] = None) -> Path:
    """A dataset folder holding only the training ``cases`` of ``root`` (symbolic links), test split included.

    LA h5: ``<out>/<case>`` links and ``train.list`` / ``test.list``; NIfTI:
    ``imagesTr``/``labelsTr`` (and ``labelsTr_<noisy_labels>``) links per case,
    ``imagesTs``/``labelsTs`` linked whole, ``dataset.json`` copied. Nothing in
    ``root`` is written. An LA ``root`` may be either public layout (:func:`~pyseg_noise.data.la_case_root`);
    the subset has this library's (case folders beside the lists).
    """
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if layout == "h5":
        (out / "train.list").write_text("".join(f"{c}\n" for c in cases))
        test = []
        try:
            test = read_case_list(find_case_list(root, "test"))
        except FileNotFoundError:
            pass
        if test:
            (out / "test.list").write_text("".join(f"{c}\n" for c in test))
        case_root = la_case_root(root, list(cases) + test)
        for case in list(cases) + test:
            _link(case_root / case, out / case)
        return out
    ending = read_dataset_json(root)["file_ending"]
    (out / "dataset.json").write_text((root / "dataset.json").read_text())
    for folder in ("imagesTs", "labelsTs"):
        if (root / folder).is_dir():
            _link(root / folder, out / folder)
    label_folders = ["labelsTr"] + ([f"labelsTr_{noisy_labels}"] if noisy_labels else [])
    for folder in ["imagesTr"] + label_folders:
        (out / folder).mkdir(exist_ok=True)
    for case in cases:
        for image in sorted((root / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{ending}")):
            _link(image, out / "imagesTr" / image.name)
        for folder in label_folders:
            _link(root / folder / f"{case}{ending}", out / folder / f"{case}{ending}")
    return out


# ----------------------------------------------------------------------------- one training run, resumable
def _train(config: TrainConfig, run_dir: Path, *, overwrite: bool, validate: bool):
    ckpt = checkpoint_path(run_dir)
    if ckpt.is_file():
        state = load_checkpoint(ckpt)
        if state.get("finished"):
            summary_file = run_dir / "eval" / "summary.json"
            summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
            return TrainResult(run_dir, int(state["iteration"]), int(state["total_iterations"]), ckpt, summary)
        return Trainer(config, run_dir, resume=True, validate=validate).fit()
    return Trainer(config, run_dir, overwrite=overwrite, validate=validate).fit()


def pseudo_label_quality(root: PathLike, labels: Dict[str, np.ndarray], *, layout: str,
                         num_classes: int) -> Dict[str, float]:
    """Mean foreground Dice of each pseudo label against the dataset's clean label (``{case: dice}``)."""
    root = Path(root)
    out = {}
    for case, pseudo in labels.items():
        if layout == "h5":
            clean = read_h5(la_case_path(root, case), "label", what="LA h5 file")
        else:
            clean = read_volume(root / "labelsTr" / f"{case}{read_dataset_json(root)['file_ending']}")
        out[case] = float(np.mean([dice(pseudo == c, clean == c) for c in range(1, num_classes)]))
    return out


def base_model_method(config: TrainConfig, settings: SelfTrainingConfig) -> tuple:
    """``(method, method_options)`` of the base models (see :class:`SelfTrainingConfig`).

    A ``tsman`` pipeline's default is ``densevoxnet`` with the final TSMAN's DenseVoxNet sizes
    (so base models 0 and 1 can initialise its streams); ``base_method_options`` override them.
    """
    final_options = config.to_dict()["method_options"]
    method = settings.base_method or ("densevoxnet" if config.method == "tsman" else config.method)
    if method == config.method:
        return method, final_options
    options = dict(settings.base_method_options)
    if method == "densevoxnet" and config.method == "tsman":
        sizes = {k: final_options[k] for k in DENSEVOXNET_SIZE_KEYS + ("aux_weight",)}
        options = {**sizes, **options}
    return method, options


def fine_tuning_streams(config: TrainConfig, settings: SelfTrainingConfig, base_method: str,
                        base_runs: Sequence[Path]) -> Optional[List[str]]:
    """The ``init_streams`` of the final TSMAN (base models 0 and 1), or None where it trains from scratch.

    Raises:
        ConfigError: ``init_from_base`` with fewer than two base models; ``init_streams`` set by hand too.
    """
    if config.method != "tsman" or base_method != "densevoxnet" or not settings.init_from_base:
        return None
    if config.method_options.init_streams:
        raise ConfigError("method_options.init_streams must be unset: self-training sets it to base models 0 "
                          "and 1 (set self_training.init_from_base: false to keep your own)")
    if len(base_runs) < 2:
        raise ConfigError(f"self_training.init_from_base needs two base models (the two streams' "
                          f"initialisations), got base_iterations {list(settings.base_iterations)}")
    return [str(base_runs[0]), str(base_runs[1])]


# ----------------------------------------------------------------------------- the pipeline
def run_self_training(config: TrainConfig, run_dir: PathLike, settings: Optional[SelfTrainingConfig] = None, *,
                      overwrite: bool = False) -> SelfTrainingResult:
    """Run (or resume) TSMAN's self-training; see the module docstring.

    Args:
        config: the final retraining's run (method ``tsman`` usually; data, optimizer,
            iterations); the base models copy it with their own method, seed and iterations.
        run_dir: the pipeline folder.
        settings: :class:`SelfTrainingConfig` (TSMAN's defaults if None).
        overwrite: start the Trainer runs afresh where a folder already holds an unfinished
            run without a checkpoint (finished runs are always reused).

    Raises:
        ConfigError: bad settings; ``data.label_overrides`` already set (the pipeline sets it).
        FileNotFoundError: missing data.
    """
    settings = settings or SelfTrainingConfig()
    settings.check()
    d = config.data
    if not d.root:
        raise ConfigError("data.root is required for self-training")
    if d.label_overrides:
        raise ConfigError("data.label_overrides must be empty: self-training writes its own (the pseudo labels)")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    root = Path(d.root)
    layout = d.layout or detect_layout(root)

    # 1. the split
    split_file = run_dir / "split.json"
    if split_file.is_file():
        split = json.loads(split_file.read_text())
        labelled, unlabelled = split["labelled"], split["unlabelled"]
    else:
        labelled, unlabelled = split_cases(training_case_names(root, layout, d.train_split), settings.labelled_fraction,
                                           settings.split_seed)
        split_file.write_text(json.dumps({"labelled_fraction": settings.labelled_fraction,
                                          "split_seed": settings.split_seed, "labelled": labelled,
                                          "unlabelled": unlabelled}, indent=1))

    # 2. the base models, on the labelled cases only
    subset = make_case_subset(root, labelled, run_dir / "labelled_data", layout=layout, noisy_labels=d.noisy_labels)
    base_method, base_options = base_model_method(config, settings)
    final_values = config.to_dict()
    base_runs = []
    for t, iterations in enumerate(settings.base_iterations):
        values = json.loads(json.dumps(final_values))
        values.update(method=base_method, iterations=int(iterations), seed=config.seed + t)
        values["data"]["root"] = str(subset)
        values["data"]["layout"] = layout
        values["method_options"] = base_options
        run = run_dir / f"base_{t}"
        _train(config_from_dict(values), run, overwrite=overwrite, validate=settings.validate_base)
        base_runs.append(run)

    # 3. pseudo labels for the unlabelled cases
    pseudo_dir = run_dir / "pseudo_labels"
    record = pseudo_dir / "pseudo_labels.json"
    h5_key = f"label_{d.noisy_labels}" if d.noisy_labels else "label"
    if record.is_file() and json.loads(record.read_text()).get("cases") == sorted(unlabelled):
        paths = {c: str(p) for c, p in label_override_paths(str(pseudo_dir)).items()}
        quality_file = pseudo_dir / "quality.json"
        dice_by_case = json.loads(quality_file.read_text()) if quality_file.is_file() else {}
    else:
        models = [load_trained(r, config.device) for r in base_runs]
        labels = distill_dataset(
            models, root, unlabelled, method=settings.distillation, layout=layout, split=d.train_split,
            transforms=data_distillation_transforms(settings.flip_axes),
            patch_size=tuple(settings.patch_size or d.crop_size), stride=tuple(settings.stride or config.val_stride),
            batch_size=config.val_batch_size, progress=config.progress,
        )
        del models
        paths = write_pseudo_labels(root, labels, layout=layout, out_dir=pseudo_dir, h5_key=h5_key,
                                    split=d.train_split)["label_paths"]
        try:
            dice_by_case = pseudo_label_quality(root, labels, layout=layout, num_classes=d.num_classes)
        except (FileNotFoundError, ValueError):  # no clean labels to compare with
            dice_by_case = {}
        (pseudo_dir / "quality.json").write_text(json.dumps(dice_by_case, indent=1))

    # 4. retrain on manual + pseudo labels
    values = json.loads(json.dumps(final_values))
    values["data"]["label_overrides"] = str(pseudo_dir)
    values["data"]["layout"] = layout
    init = fine_tuning_streams(config, settings, base_method, base_runs)
    if init:
        values["method_options"]["init_streams"] = init
    final = _train(config_from_dict(values), run_dir / "final", overwrite=overwrite, validate=True)

    summary = {
        "labelled": labelled, "unlabelled": unlabelled, "base_method": base_method, "init_streams": init,
        "base_runs": [str(r) for r in base_runs], "distillation": settings.distillation,
        "pseudo_dice_mean": float(np.mean(list(dice_by_case.values()))) if dice_by_case else None,
        "pseudo_dice": dice_by_case, "final_run": str(run_dir / "final"),
        "final_summary": getattr(final, "summary", None), "settings": asdict(settings),
    }
    (run_dir / "self_training.json").write_text(json.dumps(summary, indent=1))
    return SelfTrainingResult(run_dir, labelled, unlabelled, base_runs, paths, dice_by_case, final)


# ----------------------------------------------------------------------------- settings from YAML
def load_self_training(path: Optional[PathLike] = None, overrides: Sequence[str] = (), *,
                       data: Optional[PathLike] = None) -> tuple:
    """``(TrainConfig, SelfTrainingConfig)`` of a pipeline (``pyseg-noise self-train``).

    Defaults <- the YAML file ``path`` <- ``overrides`` (``"key.sub=value"``) <- ``data`` (``data.root``).
    The YAML may hold a ``self_training:`` section with :class:`SelfTrainingConfig`'s keys;
    everything else is the final run's :class:`~pyseg_noise.training.TrainConfig`
    (method ``tsman`` unless it says otherwise).

    Raises:
        ConfigError: an unknown key or a bad value (named).
        FileNotFoundError: ``path`` missing.
    """
    values = read_yaml(path) if path else {}
    values = merge_dicts(values, parse_overrides(overrides))
    st_values = values.pop("self_training", None)
    values.setdefault("method", "tsman")
    if data:
        values = merge_dicts(values, {"data": {"root": str(data)}})
    return config_from_dict(values), dataclass_from_dict(SelfTrainingConfig, st_values, "self_training")
