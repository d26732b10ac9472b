"""Truncated, corrupt and missing data files through ``pyseg-noise train / predict / evaluate``.

Each case: exit code 2 and exactly one ``pyseg-noise CMD: error: ...`` line on stderr
that names the culprit file -- no traceback -- wherever the file is met: up front,
in the middle of training (also inside a DataLoader worker), or in the final validation.
"""
from __future__ import annotations

import random
import re
import shutil

import h5py
import numpy as np
import pytest

from pyseg_noise.cli import main
from pyseg_noise.training import Trainer, load_checkpoint

from ..training.tiny_runs import make_tiny_dataset, tiny_config

TINY = ["--set", "data.crop_size=[32,32,16]", "--set", "model.n_filters=2", "--set", "val_stride=[16,16,16]",
        "--set", "plots=false", "--batch-size", "2", "--no-progress", "--iterations", "2"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_data")
    return {"h5": make_tiny_dataset(base / "h5"), "nifti": make_tiny_dataset(base / "nifti", layout="nifti")}


@pytest.fixture(scope="module")
def trained(datasets, tmp_path_factory):
    run = tmp_path_factory.mktemp("bad_data_run") / "run"
    Trainer(tiny_config(datasets["h5"], "vnet", iterations=2), run, validate=False).fit()
    return run


@pytest.fixture
def copy(datasets, tmp_path):
    return lambda layout: shutil.copytree(datasets[layout], tmp_path / f"data_{layout}")


def truncate(path, keep=300):
    path.write_bytes(path.read_bytes()[:keep])


def garbage(path):
    path.write_bytes(random.Random(str(path)).randbytes(2000))


def one_error_line(argv, capsys, *expected):
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"pyseg-noise {argv[0]}: error: "), lines[0]
    for text in expected:
        assert re.search(text, lines[0]), (text, lines[0])
    return lines[0]


def named(path):
    return re.escape(str(path))


# ----------------------------------------------------------------------------- train
@pytest.mark.slow  # a CLI training run up to the fault (the fast tier leaves it out)
@pytest.mark.parametrize("workers", [0, 1])
def test_train_meets_a_truncated_nifti_image_mid_run(copy, tmp_path, capsys, workers):
    """Case 2 is not the first case (which is probed up front): the error comes from the data stream."""
    root = copy("nifti")
    bad = root / "imagesTr" / "case_002_0000.nii.gz"
    truncate(bad)
    run = tmp_path / "run"
    one_error_line(["train", "vnet", "--data", str(root), "--out", str(run), "--num-workers", str(workers), *TINY],
                   capsys, r"reading the training data for iteration \d+ failed: cannot read image file "
                   + named(bad) + " as NIfTI")
    assert not (run / "checkpoints" / "last.pt").exists()


@pytest.mark.slow  # a CLI training run up to the fault (the fast tier leaves it out)
def test_train_meets_a_truncated_h5_mid_run_in_a_worker(copy, tmp_path, capsys):
    root = copy("h5")
    bad = root / "case_003" / "mri_norm2.h5"
    truncate(bad, 2000)
    one_error_line(["train", "vnet", "--data", str(root), "--out", str(tmp_path / "run"), "--num-workers", "1",
                    *TINY], capsys, r"reading the training data for iteration \d+ failed: cannot read LA h5 file "
                   + named(bad) + r" as HDF5: .*truncated file")


def test_train_refuses_a_garbage_first_h5_up_front(copy, tmp_path, capsys):
    root = copy("h5")
    bad = root / "case_000" / "mri_norm2.h5"
    garbage(bad)
    one_error_line(["train", "vnet", "--data", str(root), "--out", str(tmp_path / "run"), *TINY], capsys,
                   "^pyseg-noise train: error: cannot read LA h5 file " + named(bad) + " as HDF5")


@pytest.mark.slow  # a CLI training run up to the fault (the fast tier leaves it out)
def test_train_meets_an_h5_without_its_label_dataset(copy, tmp_path, capsys):
    root = copy("h5")
    bad = root / "case_002" / "mri_norm2.h5"
    with h5py.File(bad, "r+") as f:
        del f["label"]
    one_error_line(["train", "vnet", "--data", str(root), "--out", str(tmp_path / "run"), *TINY], capsys,
                   named(bad) + r" has no dataset 'label'; it holds \['image', 'label_noisy'\]")


@pytest.mark.parametrize("folder", ["labelsTr", "labelsTr_noisy"])
def test_train_refuses_an_image_without_a_label_before_training(copy, tmp_path, capsys, folder):
    """NIfTI cases are listed by label file: a missing one used to drop its case silently."""
    root = copy("nifti")
    missing = root / folder / "case_001.nii.gz"
    missing.unlink()
    run = tmp_path / "run"
    one_error_line(["train", "vnet", "--data", str(root), "--noisy-labels", "noisy", "--out", str(run), *TINY],
                   capsys, "label file not found: " + named(missing) + ", the label of "
                   + named(root / "imagesTr" / "case_001_0000.nii.gz"))
    assert not (run / "checkpoints").exists()


def test_train_refuses_a_missing_validation_label_before_training(copy, tmp_path, capsys):
    root = copy("nifti")
    missing = root / "labelsTs" / "case_005.nii.gz"
    missing.unlink()
    run = tmp_path / "run"
    one_error_line(["train", "vnet", "--data", str(root), "--out", str(run), *TINY], capsys,
                   "label file not found: " + named(missing))
    assert not (run / "checkpoints").exists()


@pytest.mark.slow  # a CLI training run up to the fault (the fast tier leaves it out)
def test_train_meets_a_corrupt_validation_label_after_training(copy, tmp_path, capsys):
    root = copy("nifti")
    bad = root / "labelsTs" / "case_005.nii.gz"
    truncate(bad)
    run = tmp_path / "run"
    one_error_line(["train", "vnet", "--data", str(root), "--out", str(run), *TINY], capsys,
                   "reading the validation data after iteration 2 failed: cannot read label file " + named(bad))
    assert load_checkpoint(run)["finished"]  # the trained model is saved before validation


# ----------------------------------------------------------------------------- predict
def test_predict_names_a_truncated_case_of_a_dataset_folder(copy, trained, tmp_path, capsys):
    root = copy("h5")
    bad = root / "case_005" / "mri_norm2.h5"
    truncate(bad, 2000)
    one_error_line(["predict", str(trained), "--input", str(root), "--out", str(tmp_path / "pred"),
                    "--no-progress", "--stride", "16", "16", "16"], capsys, "cannot read LA h5 file " + named(bad))


@pytest.mark.parametrize("name,damage,expected", [
    ("case_001_0000.nii.gz", truncate, "cannot read image file {} as NIfTI"),
    ("case_002.nii.gz", garbage, "cannot read image file {} as NIfTI"),
    ("case_003.h5", garbage, "cannot read image file {} as HDF5"),
    ("case_004.npy", truncate, r"cannot read image file {} as .npy"),
])
def test_predict_names_a_corrupt_file_of_an_image_folder(datasets, trained, tmp_path, capsys, name, damage,
                                                         expected):
    folder = tmp_path / "images"
    folder.mkdir()
    image = datasets["nifti"] / "imagesTs" / "case_004_0000.nii.gz"
    shutil.copy(image, folder / "case_000_0000.nii.gz")  # one healthy image first
    bad = folder / name
    if name.endswith(".npy"):
        np.save(bad, np.zeros((32, 32, 32), np.float32))
    else:
        shutil.copy(image, bad)
    damage(bad)
    one_error_line(["predict", str(trained), "--input", str(folder), "--out", str(tmp_path / "pred"),
                    "--no-progress", "--stride", "16", "16", "16"], capsys, expected.format(named(bad)))


def test_predict_names_an_image_of_a_dataset_folder_without_a_label(copy, trained, tmp_path, capsys):
    root = copy("nifti")
    missing = root / "labelsTs" / "case_005.nii.gz"
    missing.unlink()
    one_error_line(["predict", str(trained), "--input", str(root), "--out", str(tmp_path / "pred"),
                    "--no-progress"], capsys, "label file not found: " + named(missing),
                   r"pass their folder \(--input " + named(root / "imagesTs") + r"\)")


# ----------------------------------------------------------------------------- evaluate
@pytest.mark.parametrize("ending,damage,expected", [
    (".nii.gz", truncate, "cannot read label file {} as NIfTI"),
    (".h5", garbage, "cannot read label file {} as HDF5"),
    (".npy", truncate, "cannot read label file {} as .npy"),
])
def test_evaluate_names_a_corrupt_prediction(datasets, tmp_path, capsys, ending, damage, expected):
    preds = tmp_path / "pred"
    preds.mkdir()
    label = datasets["nifti"] / "labelsTs" / "case_004.nii.gz"
    shutil.copy(label, preds / "case_004.nii.gz")
    bad = preds / f"case_005{ending}"
    if ending == ".npy":
        np.save(bad, np.zeros((32, 32, 32), np.uint8))
    else:
        shutil.copy(label, bad)
    damage(bad)
    one_error_line(["evaluate", str(preds), str(datasets["nifti"])], capsys, expected.format(named(bad)))


def test_evaluate_names_a_corrupt_or_missing_reference(copy, tmp_path, capsys):
    root = copy("nifti")
    preds = tmp_path / "pred"
    preds.mkdir()
    for case in ("case_004", "case_005"):
        shutil.copy(root / "labelsTs" / f"{case}.nii.gz", preds / f"{case}.nii.gz")
    bad = root / "labelsTs" / "case_005.nii.gz"
    truncate(bad)
    one_error_line(["evaluate", str(preds), str(root)], capsys, "cannot read label file " + named(bad))
    bad.unlink()
    one_error_line(["evaluate", str(preds), str(root)], capsys, "label file not found: " + named(bad))
