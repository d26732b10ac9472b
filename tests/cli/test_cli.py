"""The pyseg-noise command line: help for every subcommand, the study pipeline, reproduce, one-line errors."""
import argparse
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from pyseg_noise.cli import build_parser, main
from pyseg_noise.training import load_checkpoint, method_names

from ..training.tiny_runs import PYTHON, REPO, make_tiny_dataset, subprocess_env

SUBCOMMANDS = ["synth", "corrupt", "train", "distill", "self-train", "predict", "evaluate", "bench", "reproduce"]
TINY = ["--set", "data.crop_size=[32,32,16]", "--set", "model.n_filters=2", "--set", "val_stride=[16,16,16]",
        "--set", "plots=false", "--batch-size", "2", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("cli") / "data")


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", [None] + SUBCOMMANDS)
def test_help_of_every_subcommand(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pyseg-noise")
    if command == "train":
        for name in method_names():  # the method list comes from the registry
            assert f"  {name} " in out
    if command is None:
        for sub in SUBCOMMANDS:
            assert sub in out


def _parsers(parser, name="pyseg-noise"):
    """(name, parser) of ``parser`` and of every subcommand below it, at any depth (distill NAME too)."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


#: RST that must not reach a terminal: inline literals and interpreted text (``x``, `x`, :role:`x`),
#: literal-block markers (a line ending in ::) and directives or comments (.. name::)
_RST_MARKUP = re.compile(r"`|::\s*$|^\s*\.\. ", re.MULTILINE)


def test_help_is_plain_text_in_every_subcommand():
    helps = dict(_parsers(build_parser()))
    assert {"pyseg-noise", "pyseg-noise train", "pyseg-noise distill hd"} <= set(helps)
    for name, parser in helps.items():
        text = parser.format_help()
        markup = [line for line in text.splitlines() if _RST_MARKUP.search(line)]
        assert not markup, f"{name} --help shows RST markup: {markup}"
    top = helps["pyseg-noise"].format_help()
    # the study's list follows its heading (the literal block's lines), not a dangling "::"
    assert "Subcommands, in the order of a study:\n\n    pyseg-noise synth OUT" in top
    assert 'The pyseg-noise command line (also "python -m pyseg_noise").' in top


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run([PYTHON, "-m", "pyseg_noise", "train", "--help"], env=subprocess_env(), cwd=str(REPO),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "METHOD" in proc.stdout and "pint" in proc.stdout


def _one_error_line(code, err, expected):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and expected in lines[0], lines[0]
    return lines[0]


def test_unknown_method(data, tmp_path, capsys):
    code, _, err = run(["train", "nope", "--data", str(data), "--out", str(tmp_path / "r")], capsys)
    line = _one_error_line(code, err, "unknown method 'nope'; registered methods:")
    assert line.startswith("pyseg-noise train: error:") and "pint" in line


def test_negative_iterations(data, tmp_path, capsys):
    code, _, err = run(["train", "vnet", "--data", str(data), "--out", str(tmp_path / "r"), "--iterations", "-5"],
                       capsys)
    _one_error_line(code, err, "iterations must be a positive integer, got -5")


def test_missing_data_folder(tmp_path, capsys):
    code, _, err = run(["train", "vnet", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")], capsys)
    _one_error_line(code, err, f"data folder not found: {tmp_path / 'nowhere'}")
    code, _, err = run(["reproduce", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], capsys)
    _one_error_line(code, err, "--data folder not found")


def test_missing_data_argument(tmp_path, capsys):
    code, _, err = run(["train", "vnet", "--out", str(tmp_path / "r")], capsys)
    _one_error_line(code, err, "data.root is required")


def test_mismatched_classes(tmp_path, capsys):
    nifti = make_tiny_dataset(tmp_path / "nifti", layout="nifti")
    code, _, err = run(["train", "vnet", "--data", str(nifti), "--out", str(tmp_path / "r"), "--num-classes", "3"],
                       capsys)
    _one_error_line(code, err, "data.num_classes=3 but")
    # a label value >= num_classes in the training labels
    import h5py

    h5 = make_tiny_dataset(tmp_path / "h5")
    with h5py.File(h5 / "case_000" / "mri_norm2.h5", "r+") as f:
        label = f["label"][()]
        label[0, 0, 0] = 2
        del f["label"]
        f.create_dataset("label", data=label)
    code, _, err = run(["train", "vnet", "--data", str(h5), "--out", str(tmp_path / "r2")], capsys)
    _one_error_line(code, err, "contains the value 2 but 2 classes are declared")


def test_missing_noisy_labels_and_bad_overrides(data, tmp_path, capsys):
    code, _, err = run(["train", "vnet", "--data", str(data), "--out", str(tmp_path / "r"), "--noisy-labels", "x"],
                       capsys)
    _one_error_line(code, err, "pyseg-noise corrupt")
    code, _, err = run(["train", "pint", "--data", str(data), "--out", str(tmp_path / "r"),
                        "--set", "method_options.passes=0"], capsys)
    _one_error_line(code, err, "method_options.passes (M) must be >= 1")
    code, _, err = run(["reproduce", "--methods", "pint", "bogus", "--out", str(tmp_path / "o")], capsys)
    _one_error_line(code, err, "unknown method 'bogus' in --methods")


def test_distill_without_a_name_and_bench(capsys):
    code, _, err = run(["distill"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "error" in err


@pytest.mark.slow  # the whole study through the command line (the fast tier leaves it out)
def test_study_pipeline_synth_corrupt_train_predict_evaluate(tmp_path, capsys):
    root = tmp_path / "syn"
    assert run(["synth", str(root), "--n-train", "4", "--n-test", "2", "--shape", "32", "32", "32"], capsys)[0] == 0
    code, out, _ = run(["corrupt", str(root), "--fraction", "0.5", "--radius-range", "1", "3"], capsys)
    assert code == 0 and "2 of 4 training cases corrupted" in out
    manifest = json.loads((root / "label_noisy_manifest.json").read_text())
    assert manifest["num_noisy"] == 2

    run_dir = tmp_path / "run"
    code, out, err = run(["train", "pint", "--data", str(root), "--noisy-labels", "noisy", "--out", str(run_dir),
                          "--iterations", "2", "--set", "method_options.image_phase_iterations=1", *TINY], capsys)
    assert code == 0, err
    assert "pint: iteration 3/3; 2 test cases: Dice" in out
    state = load_checkpoint(run_dir)
    assert state["config"]["data"]["noisy_labels"] == "noisy" and state["finished"]

    # resume of a finished run: nothing left to do, same checkpoint
    code, out, err = run(["train", "pint", "--out", str(run_dir), "--resume", "--no-progress"], capsys)
    assert code == 0, err
    assert load_checkpoint(run_dir)["iteration"] == 3

    for fmt, ending in (("nifti", ".nii.gz"), ("h5", ".h5"), ("npy", ".npy")):
        pred = tmp_path / f"pred_{fmt}"
        code, out, err = run(["predict", str(run_dir), "--input", str(root), "--out", str(pred), "--format", fmt,
                              "--no-progress", "--stride", "16", "16", "16"], capsys)
        assert code == 0, err
        assert sorted(p.name for p in pred.iterdir()) == [f"case_004{ending}", f"case_005{ending}"]

    # evaluate the npy predictions against the dataset's clean test labels, and against themselves
    code, out, err = run(["evaluate", str(tmp_path / "pred_npy"), str(root), "--out", str(tmp_path / "m.csv")],
                         capsys)
    assert code == 0, err
    assert "| case_004 | 1 |" in out and "**mean**" in out and (tmp_path / "m.csv").is_file()
    same = tmp_path / "same"
    shutil.copytree(tmp_path / "pred_npy", same)
    code, out, _ = run(["evaluate", str(tmp_path / "pred_npy"), str(same)], capsys)
    pred = np.load(tmp_path / "pred_npy" / "case_004.npy")
    if pred.any():
        assert "| case_004 | 1 | 1.0000 | 1.0000 | 0.0000 | 0.0000 |" in out


@pytest.mark.slow  # a reproduction end to end (the fast tier leaves it out)
def test_reproduce_smoke(tmp_path, capsys):
    out_dir = tmp_path / "rep"
    code, out, err = run(["reproduce", "--scale", "smoke", "--out", str(out_dir), "--no-progress"], capsys)
    assert code == 0, err
    assert "scale: smoke" in out and "data: synthetic" in out
    assert "| Method | Labels | Noise | Dice % (ours) | ASD vox (ours) | Dice % (paper) | ASD vox (paper) | Runs | " \
           "Collapse |" in out
    assert "| PINT | noisy | 50% |" in out and "| 89.04 ± 0.71 | 1.92 ± 0.17 |" in out
    assert "| V-Net | clean | 0% |" in out and "| 91.14 | 1.52 |" in out
    for name in ("table.md", "table.csv", "runs.csv", "report.json", "plots/dice.png"):
        assert (out_dir / name).is_file(), name
    report = json.loads((out_dir / "report.json").read_text())
    assert {(r["method"], r["labels"]) for r in report["runs"]} == {
        ("vnet", "clean"), ("vnet", "noisy"), ("vnet_same_budget", "noisy"), ("pnt", "noisy"), ("int", "noisy"),
        ("pint", "noisy")}
    # a second call reuses the finished runs
    code, out, _ = run(["reproduce", "--scale", "smoke", "--out", str(out_dir), "--no-progress"], capsys)
    assert code == 0 and out.count("[reused]") == 6


def test_parser_lists_every_subcommand():
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert set(SUBCOMMANDS) <= set(choices)


def test_bench_calls_the_benchmarks_main(capsys):
    from pyseg_noise import benchmarks

    if not hasattr(benchmarks, "main"):
        code, _, err = run(["bench"], capsys)
        _one_error_line(code, err, "pyseg_noise.benchmarks has no main(argv)")
        return
    with pytest.raises(SystemExit) as info:
        main(["bench", "--", "--help"])  # the benchmarks' own help
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out
