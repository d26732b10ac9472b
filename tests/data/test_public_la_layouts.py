"""The LA layouts of the public code bases (UA-MT, SSL4MIS), written here with h5py, read by every entry point.

Both code bases use the same files::

    data/train.list, data/test.list                    case names, one a line
    data/2018LA_Seg_Training Set/<case>/mri_norm2.h5    "image" float32, "label" uint8

UA-MT is pointed at ``data/2018LA_Seg_Training Set`` (it reads ``<root>/../train.list``);
SSL4MIS-style code at ``data``. ``--data`` accepts either folder.
"""
import re

import h5py
import numpy as np
import pytest

from pyseg_noise.cli import main
from pyseg_noise.data import LA_CASE_FOLDER, corrupt_dataset, detect_layout, la_case_root, open_dataset
from pyseg_noise.reproduce.noisy_labels import write_noisy_labels
from pyseg_noise.training.config import config_from_dict
from pyseg_noise.training.run_data import train_dataset, validation_dataset

SHAPE = (32, 32, 16)
TRAIN = ["0RZDK210BSMWAA6467LU", "1D7CUD1955YZPGK8XHJX", "23X6SY44VT9KFHR7S7OC", "2XL5HSFSE93RMOJDRGR4"]
TEST = ["UPT6DX9IQY9JAZ7HJKA7", "UTBUJIWZMKP64E3N73YC"]


def _volume(index):
    """An image and a ball label whose radius and centre depend on ``index`` (so cases differ)."""
    rng = np.random.default_rng(index)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), -1)
    centre = np.array([16 + index % 3, 15, 8])
    label = (np.linalg.norm(grid - centre, axis=-1) <= 5 + index % 3).astype(np.uint8)
    image = (label * 2.0 + rng.normal(0, 0.5, SHAPE)).astype(np.float32)
    return image, label


def _write_public_la(data):
    """UA-MT's ``data/`` folder: the lists as UA-MT ships them (one name a line, final newline) with
    a trailing blank and CRLF line thrown in, and the cases inside ``2018LA_Seg_Training Set/``."""
    for i, case in enumerate(TRAIN + TEST):
        folder = data / LA_CASE_FOLDER / case
        folder.mkdir(parents=True)
        image, label = _volume(i)
        with h5py.File(folder / "mri_norm2.h5", "w") as f:
            f.create_dataset("image", data=image)
            f.create_dataset("label", data=label)
    (data / "train.list").write_bytes(("\r\n".join(TRAIN[:2]) + "\r\n" + TRAIN[2] + "  \n" + TRAIN[3] + "\n\n").encode())
    (data / "test.list").write_text("".join(f"{c}\n" for c in TEST))
    return data


@pytest.fixture
def public_la(tmp_path):
    return _write_public_la(tmp_path / "data")


# the two ways the public code bases point at the same files
LAYOUTS = {"ssl4mis": lambda data: data, "ua-mt": lambda data: data / LA_CASE_FOLDER}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_both_layouts_read_every_case(public_la, layout):
    root = LAYOUTS[layout](public_la)
    assert detect_layout(root) == "h5"
    assert la_case_root(root) == public_la / LA_CASE_FOLDER
    train = open_dataset(root, "train", crop_size=None, augment=False, normalize=False)
    test = open_dataset(root, "test", crop_size=None, augment=False, normalize=False)
    assert train.cases == TRAIN and test.cases == TEST
    for ds, offset in ((train, 0), (test, len(TRAIN))):
        for i, case in enumerate(ds.cases):
            image, label = _volume(offset + i)
            item = ds[i]
            assert item["case"] == case
            np.testing.assert_array_equal(item["image"][0].numpy(), image)
            np.testing.assert_array_equal(item["label"].numpy(), label.astype(np.int64))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_training_and_noisy_labels_on_both_layouts(public_la, tmp_path, layout):
    """What `train --data` and `reproduce pint --data` open: the training split with override labels
    written by the reproduction, and the clean validation split."""
    root = LAYOUTS[layout](public_la)
    manifest = write_noisy_labels(root, tmp_path / "labels", 0.5, seed=0, radius_range=(1, 2))
    assert manifest["num_noisy"] == 2 and sorted(r["case"] for r in manifest["records"]) == sorted(TRAIN)
    cfg = config_from_dict({"method": "vnet", "data": {"root": str(root), "crop_size": [32, 32, 16],
                                                        "label_overrides": str(tmp_path / "labels")}})
    train = train_dataset(cfg)
    assert train.cases == TRAIN
    changed = []
    for rec in manifest["records"]:
        _, label = train.load_case(rec["case"])
        clean = _volume(TRAIN.index(rec["case"]))[1]
        changed.append(not np.array_equal(label, clean))
        assert int(label.sum()) == rec["foreground_after"] and int(clean.sum()) == rec["foreground_before"]
    assert changed == [r["noisy"] for r in manifest["records"]]
    assert validation_dataset(cfg).cases == TEST


def test_corrupt_writes_into_the_nested_case_folders(public_la):
    corrupt_dataset(public_la, 0.5, seed=1, radius_range=(1, 1))
    with h5py.File(public_la / LA_CASE_FOLDER / TRAIN[0] / "mri_norm2.h5", "r") as f:
        assert "label_noisy" in f


def test_case_folders_directly_in_the_root_still_win_when_they_hold_the_cases(tmp_path):
    """This library's own layout (<root>/<case>/mri_norm2.h5) next to an unrelated nested folder."""
    data = _write_public_la(tmp_path / "data")
    (data / LA_CASE_FOLDER).rename(tmp_path / "moved")
    for case in TRAIN + TEST:
        (tmp_path / "moved" / case).rename(data / case)
    (data / LA_CASE_FOLDER).mkdir()  # empty
    assert la_case_root(data, TRAIN) == data
    assert open_dataset(data, "train", crop_size=None).cases == TRAIN


# ------------------------------------------------------------------ errors: one line naming the file
def _one_error_line(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, err)
    return lines[0]


@pytest.mark.parametrize("command", ["train", "reproduce"])
def test_missing_list_empty_list_and_absent_case(public_la, tmp_path, capsys, command):
    root = public_la / LA_CASE_FOLDER  # UA-MT's root_path: the lists are one level up
    outs = iter(range(3))

    def argv():  # a fresh --out each time: `train` makes its run folder before it reads the data
        return (["train", "vnet"] if command == "train" else ["reproduce", "pint", "--scale", "smoke"]) + [
            "--data", str(root), "--out", str(tmp_path / f"out{next(outs)}"), "--no-progress"]

    # a case named in train.list whose folder is absent: the h5 path and the list are named
    missing = root / TRAIN[2] / "mri_norm2.h5"
    missing.unlink()
    line = _one_error_line(capsys, argv())
    assert re.search(rf"h5 file of case '{TRAIN[2]}' \(named in {re.escape(str(public_la / 'train.list'))}\) "
                     rf"not found: {re.escape(str(missing))}", line), line

    # an empty list
    (public_la / "train.list").write_text("\n   \n")
    line = _one_error_line(capsys, argv())
    assert f"case list {public_la / 'train.list'} names no cases" in line

    # no train.list at all (test.list still tells the layout): both places tried are named
    (public_la / "train.list").unlink()
    line = _one_error_line(capsys, argv())
    assert f"case list for split 'train' not found: tried {root / 'train.list'}, {public_la / 'train.list'}" in line
