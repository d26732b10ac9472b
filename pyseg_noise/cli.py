"""The ``pyseg-noise`` command line (also ``python -m pyseg_noise``).

Subcommands, in the order of a study::

    pyseg-noise synth OUT                       make the synthetic LA-like dataset
    pyseg-noise corrupt ROOT --fraction 0.5     simulate noisy training labels (PINT §3.2)
    pyseg-noise train METHOD --data ROOT --out RUN [--noisy-labels noisy]
    pyseg-noise distill {md,dd,hd} --runs RUN... --data ROOT    pseudo labels (TSMAN Eq. 8-10)
    pyseg-noise self-train --data ROOT --out DIR                TSMAN's self-training pipeline
    pyseg-noise predict RUN --input DIR --out PRED
    pyseg-noise evaluate PRED REF               Dice, Jaccard, ASD, HD95 table
    pyseg-noise bench ...                       the op benchmarks
    pyseg-noise reproduce [pint|tsman]          a paper's tables, end to end

A bad setting (unknown method, negative iterations, missing data folder,
class-count mismatch...), an unreadable or missing data file, or a corrupt,
foreign or incomplete checkpoint prints one ``pyseg-noise CMD: error: ...`` line
on stderr (naming the file) and exits with code 2. A NaN/inf loss, or a
checkpoint, ``log.jsonl``, ``eval/`` or plot file that cannot be written (e.g. a
full disk; the last checkpoint is kept) prints such a line and exits with 1,
Ctrl-C with 130 after saving a checkpoint (continue with ``--resume``).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["main", "build_parser"]

PROG = "pyseg-noise"


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):
        # no "(default: None)", and no second default where the help already names one
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return value


def _progress(args) -> bool:
    """Progress bars unless --no-progress, and only on a terminal (a log file gets no bar noise)."""
    return not args.no_progress and sys.stderr.isatty()


# ----------------------------------------------------------------------------- synth
def _cmd_synth(args) -> int:
    from pyseg_noise.data import generate_synthetic_dataset

    info = generate_synthetic_dataset(args.out, n_train=args.n_train, n_test=args.n_test, shape=tuple(args.shape),
                                      layout=args.layout, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote {len(info['train'])} training and {len(info['test'])} test cases ({args.layout}) to {info['root']}")
    return 0


# ----------------------------------------------------------------------------- corrupt
def _cmd_corrupt(args) -> int:
    from pyseg_noise.data import corrupt_dataset

    manifest = corrupt_dataset(args.root, args.fraction, args.seed, layout=args.layout,
                               radius_range=tuple(args.radius_range), suffix=args.suffix,
                               overwrite=not args.no_overwrite)
    print(f"{manifest['num_noisy']} of {manifest['num_cases']} training cases corrupted "
          f"(radius {manifest['radius_range'][0]}-{manifest['radius_range'][1]}) -> {manifest['target']}; "
          f"manifest {manifest['manifest']}")
    print(f"train on them with: {PROG} train METHOD --data {args.root} --noisy-labels {args.suffix} --out RUN")
    return 0


# ----------------------------------------------------------------------------- train
def _train_config(args):
    from pyseg_noise.training.config import ConfigError, load_config, merge_dicts, parse_overrides, read_yaml

    run_config = Path(args.out) / "config.yaml"
    base = {}
    if args.config:
        base = read_yaml(args.config)
    elif args.resume and run_config.is_file():
        base = read_yaml(run_config)  # resume with the run's own settings unless told otherwise
    explicit = {
        "method": args.method,
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "device": args.device,
        "deterministic": True if args.deterministic else None,
        "progress": False if not _progress(args) else None,
        "amp": args.amp,
        "checkpoint_every": args.checkpoint_every,
        "data": {k: v for k, v in {
            "root": args.data,
            "noisy_labels": args.noisy_labels,
            "label_overrides": args.label_overrides,
            "num_workers": args.num_workers,
            "num_classes": args.num_classes,
        }.items() if v is not None},
    }
    explicit = {k: v for k, v in explicit.items() if v is not None and v != {}}
    if base.get("method") not in (None, args.method) and base.get("method_options"):
        raise ConfigError(f"METHOD {args.method!r} differs from the method {base['method']!r} of the config, "
                          "whose method_options belong to it")
    values = merge_dicts(base, explicit)
    if args.set:
        values = merge_dicts(values, parse_overrides(args.set))
    return load_config(None, values)


def _cmd_train(args) -> int:
    from pyseg_noise.training import Trainer

    config = _train_config(args)
    result = Trainer(config, args.out, resume=args.resume, overwrite=args.overwrite).fit()
    s = result.summary
    if s is not None:
        print(f"{config.method}: iteration {result.iteration}/{result.total_iterations}; {s['cases']:.0f} "
              f"{config.data.val_split} cases: Dice {100 * s['dice']:.2f}%  ASD {s['asd']:.2f}  HD95 {s['hd95']:.2f}")
    print(f"run folder: {result.run_dir} (checkpoint {result.checkpoint})")
    return 0


# ----------------------------------------------------------------------------- distill
#: ``pyseg-noise distill NAME``: one line of help per distillation (TSMAN Eq. 8-10)
_DISTILLATIONS = {
    "md": "model distillation (TSMAN Eq. 8): majority vote of several trained runs",
    "dd": "data distillation (TSMAN Eq. 9): one run, majority vote over 12 rotations/flips",
    "hd": "hierarchical distillation (TSMAN Eq. 10): majority vote of the runs' data distillations",
}


def _flip_axis(name: str) -> Optional[int]:
    from pyseg_noise.training.config import ConfigError

    table = {"none": None, "x": 0, "y": 1, "z": 2}
    if name.lower() not in table:
        raise ConfigError(f"--flips takes none, x, y or z, got {name!r}")
    return table[name.lower()]


def _add_distill_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN",
                   help="run folders (or checkpoint files) of the trained base models (dd uses the first)")
    p.add_argument("--data", required=True, help="dataset folder (LA h5 or NIfTI layout)")
    p.add_argument("--cases", nargs="+", default=None, help="cases to label (default: every training case)")
    p.add_argument("--cases-file", default=None, help="a file with one case name per line")
    p.add_argument("--out", default=None,
                   help="write <case>.h5/.nii.gz files into this folder (use as data.label_overrides); "
                        "without it the labels go into the dataset as label_<suffix> / labelsTr_<suffix>")
    p.add_argument("--suffix", default="pseudo", help="name suffix inside the dataset (default: pseudo)")
    p.add_argument("--patch", nargs=3, type=int, default=None, metavar=("X", "Y", "Z"),
                   help="sliding-window patch (default: the first run's data.crop_size)")
    p.add_argument("--stride", nargs=3, type=int, default=None, metavar=("X", "Y", "Z"),
                   help="sliding-window stride (default: the first run's val_stride)")
    p.add_argument("--flips", nargs="+", default=["none", "x", "y"],
                   help="flips combined with the 4 in-plane rotations (default: none x y)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=1, help="windows per forward pass")


def _cmd_distill(args) -> int:
    from pyseg_noise.data import read_case_list, training_case_names, write_pseudo_labels
    from pyseg_noise.training import load_trained
    from pyseg_noise.training.config import ConfigError
    from pyseg_noise.training.distill import data_distillation_transforms, distill_dataset

    if not args.distillation:
        raise ConfigError(f"name a distillation: {', '.join(_DISTILLATIONS)}")
    models = [load_trained(r, args.device) for r in args.runs]
    cfg = models[0].config
    if args.cases_file:
        cases = read_case_list(args.cases_file)
    else:
        cases = list(args.cases) if args.cases else training_case_names(args.data)
    transforms = data_distillation_transforms([_flip_axis(f) for f in args.flips])
    labels = distill_dataset(models, args.data, cases, method=args.distillation, transforms=transforms,
                             patch_size=tuple(args.patch or cfg.data.crop_size),
                             stride=tuple(args.stride or cfg.val_stride), batch_size=args.batch_size,
                             progress=True)
    info = write_pseudo_labels(args.data, labels, out_dir=args.out, suffix=args.suffix)
    print(f"{len(labels)} pseudo labels ({args.distillation}, {len(models)} model(s) x {len(transforms)} "
          f"transform(s)) -> {info['target']}")
    return 0


# ----------------------------------------------------------------------------- self-train
def _cmd_self_train(args) -> int:
    import numpy as np
    import yaml

    from pyseg_noise.training.self_training import load_self_training, run_self_training

    config, settings = load_self_training(args.config, args.set or [], data=args.data)
    result = run_self_training(config, args.out, settings)
    dice = list(result.pseudo_dice.values())
    print(yaml.safe_dump({"pseudo_dice_mean": float(np.mean(dice)) if dice else None,
                          "final": result.final.summary}, sort_keys=False))
    return 0


# ----------------------------------------------------------------------------- predict
def _cmd_predict(args) -> int:
    from pyseg_noise.training import load_trained
    from pyseg_noise.training.prediction import predict_folder

    method = load_trained(args.run, device=args.device)
    written = predict_folder(method, args.input, args.out, split=args.split, fmt=args.format,
                             stride=args.stride, batch_size=args.batch_size, progress=_progress(args))
    print(f"wrote {len(written)} label maps ({args.format}) to {args.out}")
    return 0


# ----------------------------------------------------------------------------- evaluate
def _cmd_evaluate(args) -> int:
    from pyseg_noise.training.evaluation import evaluate_folder, format_table, write_rows_csv

    rows = evaluate_folder(args.pred, args.ref, split=args.split, spacing=args.spacing)
    print(format_table(rows))
    if args.out:
        write_rows_csv(rows, args.out)
        print(f"wrote {args.out}")
    return 0


# ----------------------------------------------------------------------------- bench
def _cmd_bench(args) -> int:
    from pyseg_noise.training.config import ConfigError

    try:
        from pyseg_noise import benchmarks
    except ImportError as exc:
        raise ConfigError(f"the benchmarks are not installed ({exc}); install the package from its repository")
    bench_main = getattr(benchmarks, "main", None)
    if bench_main is None:
        raise ConfigError("pyseg_noise.benchmarks has no main(argv) in this install; run the benchmark files "
                          "with `python -m pytest benchmarks/` instead")
    bench_args = list(args.bench_args)
    if bench_args[:1] == ["--"]:
        bench_args = bench_args[1:]
    return int(bench_main(bench_args) or 0)


# ----------------------------------------------------------------------------- reproduce
def _cmd_reproduce(args) -> int:
    from pyseg_noise.reproduce import REPRODUCTIONS, ReproduceSettings
    from pyseg_noise.training.config import ConfigError

    if args.paper not in REPRODUCTIONS:
        raise ConfigError(f"no reproduction for {args.paper!r}; available: {', '.join(REPRODUCTIONS)}")
    settings = ReproduceSettings(
        out=args.out, scale=args.scale, data=args.data, methods=args.methods, noise_rates=args.noise_rates,
        repeats=args.repeats, seed=args.seed, device=args.device,
        radius_range=tuple(args.radius_range) if args.radius_range else None, overrides=list(args.set or []),
        overwrite=args.overwrite, progress=_progress(args), num_workers=args.num_workers,
        jobs=args.jobs,
        labelled_fractions=args.labelled_fractions, ablation_fraction=args.ablation_fraction,
    )
    REPRODUCTIONS[args.paper](settings)
    return 0


# ----------------------------------------------------------------------------- parser
def _method_list() -> str:
    try:
        from pyseg_noise.training.registry import _METHODS, method_names

        names = method_names()
        return "\n".join(f"  {n:<14} {getattr(_METHODS[n], 'description', '')}" for n in names)
    except Exception as exc:  # the help must print even if a plug-in is broken
        return f"  (cannot list methods: {exc})"


#: an RST inline literal or interpreted text, with an optional role: ``x``, `x`, :func:`x`
_RST_INLINE = re.compile(r"(?::[\w.:-]+:)?(`{1,2})([^`\n]+?)\1")


def _plain_text(rst: str) -> str:
    """``rst`` (a docstring) as terminal text: inline markup unwrapped, literal-block markers dropped.

    Parameters
    ----------
    rst : str
        reStructuredText using inline literals (````x````), interpreted text (```x```,
        ``:role:`x```) and ``::`` literal-block markers at line ends.

    Returns
    -------
    str
        The text with ``x`` for each inline construct (``"x y"`` where it holds a space, so
        that a quoted command line stays one piece) and ``word::`` shortened to ``word:``
        (a lone or space-separated ``::`` is removed), as Sphinx renders them.
    """
    text = _RST_INLINE.sub(lambda m: f'"{m[2]}"' if " " in m[2] else m[2], rst)
    text = re.sub(r"(?<=\S)::$", ":", text, flags=re.MULTILINE)
    return re.sub(r"[ \t]*::$", "", text, flags=re.MULTILINE)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every subcommand."""
    paragraphs = __doc__.strip().split("\n\n")  # the title, the list of subcommands, errors and exit codes
    parser = argparse.ArgumentParser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description=_plain_text("\n\n".join(paragraphs[:3])),
                                     epilog=_plain_text("\n\n".join(paragraphs[3:])))
    from pyseg_noise import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("synth", help="generate the synthetic LA-like dataset", formatter_class=_Formatter,
                       description="Write a synthetic left-atrium-like dataset (clean labels) in the LA .h5 or "
                                   "nnU-Net NIfTI layout.")
    p.add_argument("out", help="output folder")
    p.add_argument("--n-train", type=int, default=16, help="training cases")
    p.add_argument("--n-test", type=int, default=4, help="test cases")
    p.add_argument("--shape", type=int, nargs=3, default=[96, 96, 64], metavar=("X", "Y", "Z"), help="volume size")
    p.add_argument("--layout", choices=["h5", "nifti"], default="h5", help="file layout")
    p.add_argument("--seed", type=int, default=0, help="generation seed")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("corrupt", help="simulate noisy training labels (PINT §3.2)", formatter_class=_Formatter,
                       description="Erode or dilate the labels of a share of the training cases by a random "
                                   "radius, writing them beside the clean ones with a manifest.")
    p.add_argument("root", help="dataset folder (LA .h5 or nnU-Net NIfTI)")
    p.add_argument("--fraction", type=float, required=True, help="share of training cases to corrupt, e.g. 0.5")
    p.add_argument("--seed", type=int, default=0, help="draw seed")
    p.add_argument("--radius-range", type=int, nargs=2, default=[5, 18], metavar=("LOW", "HIGH"),
                   help="erosion/dilation radii in voxels (inclusive)")
    p.add_argument("--suffix", default="noisy", help="name of the noisy labels (label_<suffix> / labelsTr_<suffix>)")
    p.add_argument("--layout", choices=["h5", "nifti"], default=None, help="layout (default: detected)")
    p.add_argument("--no-overwrite", action="store_true", help="fail if noisy labels of that suffix exist")
    p.set_defaults(func=_cmd_corrupt)

    p = sub.add_parser("train", help="train a method", formatter_class=_Formatter,
                       description="Train METHOD into a run folder (config.yaml, log.jsonl, checkpoints/, plots/, "
                                   "eval/). Settings: defaults (the papers') <- --config YAML <- options <- --set.\n"
                                   "Multi-GPU / multi-node: torchrun --nproc_per_node=G -m pyseg_noise train ...\n\n"
                                   "methods:\n" + _method_list())
    p.add_argument("method", metavar="METHOD", help="a registered method (listed above)")
    p.add_argument("--data", help="dataset folder (LA .h5 or nnU-Net NIfTI)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--noisy-labels", metavar="SUFFIX", help="train on the labels written by 'corrupt --suffix SUFFIX'")
    p.add_argument("--label-overrides", metavar="DIR", help="folder of per-case label files replacing the training labels")
    p.add_argument("--config", help="YAML config file (see configs/)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. optim.lr=0.05 "
                   "or method_options.passes=8 (repeatable)")
    p.add_argument("--iterations", type=_positive_int, help="main-phase iterations (paper: 6000)")
    p.add_argument("--batch-size", type=_positive_int, help="global batch size (paper: 4)")
    p.add_argument("--seed", type=int, help="seed")
    p.add_argument("--num-classes", type=int, help="classes including background (default 2)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], help="mixed precision")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bitwise repeatable)")
    p.add_argument("--checkpoint-every", type=int, help="iterations between checkpoints")
    p.add_argument("--num-workers", type=int, help="DataLoader workers")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("distill", help="pseudo labels from trained runs (TSMAN Eq. 8-10)",
                       formatter_class=_Formatter,
                       description="Label training cases with trained runs by model, data or hierarchical "
                                   "distillation, written in the dataset's layout or into a folder.")
    dsub = p.add_subparsers(dest="distillation", metavar="NAME")
    for name, text in _DISTILLATIONS.items():
        _add_distill_arguments(dsub.add_parser(name, help=text, description=text, formatter_class=_Formatter))
    p.set_defaults(func=_cmd_distill)

    p = sub.add_parser("self-train", help="TSMAN self-training: base models, distillation, retraining",
                       formatter_class=_Formatter,
                       description="TSMAN self-training: base models on the labelled share of the training cases,\n"
                                   "pseudo labels for the rest, the final method retrained on both.\n"
                                   "The YAML may hold a self_training section (labelled_fraction, base_iterations,\n"
                                   "distillation, ...); the rest is the final run's config. Run again to resume.")
    p.add_argument("--config", default=None, help="YAML file (run config + optional self_training: section)")
    p.add_argument("--data", default=None, help="dataset folder (data.root)")
    p.add_argument("--out", required=True, help="pipeline folder")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE",
                   help="overrides, e.g. iterations=35000 self_training.labelled_fraction=0.3")
    p.set_defaults(func=_cmd_self_train)

    p = sub.add_parser("predict", help="segment a folder of volumes with a trained run", formatter_class=_Formatter,
                       description="Sliding-window segmentation (the training crop, LA convention) of every volume "
                                   "of a dataset split or a folder of image files.")
    p.add_argument("run", help="run folder or checkpoint file")
    p.add_argument("--input", required=True, help="dataset folder or folder of .nii.gz/.nii/.h5/.npy images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", default="test", help="split read from a dataset folder")
    p.add_argument("--format", choices=["nifti", "h5", "npy"], default="nifti", help="output format")
    p.add_argument("--stride", type=int, nargs=3, metavar=("X", "Y", "Z"), help="window stride (default: the run's)")
    p.add_argument("--batch-size", type=int, default=1, help="windows per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="metrics of predictions against references", formatter_class=_Formatter,
                       description="Dice, Jaccard, ASD and HD95 (equal to medpy's) per case and class, with "
                                   "mean ± std.")
    p.add_argument("pred", help="folder of predicted label files")
    p.add_argument("ref", help="folder of reference label files, or a dataset folder (its clean labels)")
    p.add_argument("--split", default="test", help="split of a dataset folder")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), help="voxel size (default: voxels)")
    p.add_argument("--out", help="also write the rows as CSV here")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("bench", help="op benchmarks (pyseg_noise.benchmarks)", formatter_class=_Formatter,
                       description="Runs pyseg_noise.benchmarks.main(ARGS). Pass the benchmarks' own arguments "
                                   "after --, e.g. pyseg-noise bench -- --help.")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for the benchmarks (after --)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("reproduce", help="reproduce a paper's tables end to end", formatter_class=_Formatter,
                       description="pint: PINT Table 1 — V-Net on clean and noisy labels and each method on noisy "
                                   "labels, Dice and ASD on the clean test labels beside the paper's numbers.\n"
                                   "tsman: TSMAN Table 1 — pseudo labels of the unlabelled training cases from base "
                                   "models A, B, C, MD, DD and HD at labelled fractions xi, Dice/ASD/HD against "
                                   "their clean labels; and Table 2 — TSMAN retrained on manual + HD pseudo labels "
                                   "with each attention configuration (none, f4, f3+f4, f2+f3+f4, all), Dice/ASD/HD "
                                   "on the clean test labels; both beside the paper's overall scores.\n"
                                   "Every table has a collapse column. Without --data it runs on a generated "
                                   "synthetic dataset; the output says which scale and data it ran on.")
    p.add_argument("paper", nargs="?", default="pint", metavar="PAPER", help="which paper's tables: pint or tsman")
    p.add_argument("--scale", choices=["smoke", "cpu", "paper"], default=None,
                   help="budget: paper = the papers' settings (GPU); cpu = ~18 min (pint) or ~35 min (tsman) on 2 "
                        "cores; smoke = a minute or two (default: paper with a GPU, else cpu)")
    p.add_argument("--data", help="LA .h5 or nnU-Net folder with train and test splits (default: synthetic)")
    p.add_argument("--out", default=None, help="output folder (default: PAPER_reproduction)")
    p.add_argument("--methods", nargs="+", help="pint: methods on noisy labels besides V-Net (default: pnt int "
                   "pint; at paper scale also the registered Table 1 baselines)")
    p.add_argument("--noise-rates", type=float, nargs="+", help="pint: shares of noisy cases (default: the scale's)")
    p.add_argument("--labelled-fractions", type=float, nargs="+", metavar="XI",
                   help="tsman: Table 1's shares of training cases with manual labels (default: the scale's; "
                        "paper 0.3 0.5 0.8)")
    p.add_argument("--ablation-fraction", type=float, metavar="XI",
                   help="tsman: the share of manual labels of Table 2's retraining (default 0.5)")
    p.add_argument("--repeats", type=int, help="repetitions (default: the scale's; pint paper 3)")
    p.add_argument("--jobs", type=_positive_int, default=None, help="pint: trainings at once, in worker processes "
                   "of cores/JOBS torch threads each (default 1: one after the other)")
    p.add_argument("--seed", type=int, default=0, help="base seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--radius-range", type=int, nargs=2, metavar=("LOW", "HIGH"),
                   help="pint: erosion/dilation radii (default: 5 18 on --data, scaled on synthetic data)")
    p.add_argument("--set", action="append", metavar="[PREFIX:]KEY=VALUE",
                   help="override a setting for every run, or only for some (repeatable); PREFIX: a method "
                        "(pint), base or ablation (tsman: the base models, Table 2's runs)")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers per run (default: the "
                   "scale's: 4 at paper scale, else 0)")
    p.add_argument("--overwrite", action="store_true", help="discard runs of other settings found in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_reproduce)
    return parser


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (a message may quote multi-line text of a library)."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code (``sys.exit(main())``)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from pyseg_noise.training.checkpoint import CheckpointError, CheckpointWriteError
    from pyseg_noise.training.run_log import RunOutputWriteError
    from pyseg_noise.training.config import ConfigError
    from pyseg_noise.training.trainer import NonFiniteLossError, TrainingDataError, TrainingInterrupted

    user_errors = (ConfigError, FileNotFoundError, FileExistsError, CheckpointError, TrainingDataError)
    if args.command in ("synth", "corrupt", "evaluate", "predict"):
        user_errors += (ValueError,)  # these validate their inputs with ValueError
    try:
        return int(args.func(args) or 0)
    except user_errors as exc:
        print(f"{PROG} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (NonFiniteLossError, CheckpointWriteError, RunOutputWriteError) as exc:
        print(f"{PROG} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except TrainingInterrupted as exc:
        print(f"{PROG} {args.command}: {exc}; continue with --resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
