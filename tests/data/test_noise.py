"""PINT §3.2 noisy-label simulation: exact morphology, draws, determinism, displacement, files."""
import csv
import json
import math

import h5py
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from pyseg_noise.data import (
    LAH5Dataset,
    NiftiDataset,
    corrupt_dataset,
    corrupt_labels,
    erode_or_dilate,
    num_noisy_cases,
    plan_label_noise,
)
from pyseg_noise.metrics import asd, hd


def _ball(radius, spacing):
    half = [int(math.floor(radius / s)) for s in spacing]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing)], indexing="ij")
    return sum(g ** 2 for g in grids) <= radius ** 2


def _sphere(shape, centre, radius):
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return (sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius ** 2).astype(np.uint8)


# ------------------------------------------------------------------ one volume
@pytest.mark.parametrize("spacing", [None, (1.0, 0.5, 2.0)])
@pytest.mark.parametrize("radius", [1, 2, 3.5])
def test_equals_scipy_morphology_with_a_ball(spacing, radius):
    rng = np.random.default_rng(int(radius * 10))
    mask = ndi.gaussian_filter(rng.random((14, 16, 12)), 1.5) > 0.5
    mask[:, :3] = True  # touches the array edge: erosion must not eat from there
    ball = _ball(radius, spacing or (1.0, 1.0, 1.0))
    dilated = erode_or_dilate(mask.astype(np.uint8), "dilate", radius, spacing)
    eroded = erode_or_dilate(mask.astype(np.uint8), "erode", radius, spacing)
    assert dilated.dtype == np.uint8
    np.testing.assert_array_equal(dilated.astype(bool), ndi.binary_dilation(mask, ball))
    np.testing.assert_array_equal(eroded.astype(bool), ndi.binary_erosion(mask, ball, border_value=1))


def test_hand_computed_1d_and_edge_cases():
    x = np.zeros((1, 11), np.int64)
    x[0, 3:6] = 1
    np.testing.assert_array_equal(erode_or_dilate(x, "dilate", 2)[0], [0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(erode_or_dilate(x, "erode", 1)[0], [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    assert not erode_or_dilate(x, "erode", 2).any()
    np.testing.assert_array_equal(erode_or_dilate(x, "dilate", 0), x)
    full = np.ones((4, 4), np.uint8)
    np.testing.assert_array_equal(erode_or_dilate(full, "erode", 3), full)  # nothing outside the class
    empty = np.zeros((4, 4), np.uint8)
    np.testing.assert_array_equal(erode_or_dilate(empty, "dilate", 3), empty)


def test_multiclass_rules():
    label = np.zeros((1, 13), np.uint8)
    label[0, 2] = 1
    label[0, 8] = 2
    label[0, 10] = 3
    out = erode_or_dilate(label, "dilate", 3)
    # voxel 5 is 3 from class 1 and 3 from class 2: tie -> lowest class (1);
    # voxel 9 lies between classes 2 and 3 (distance 1 to both) -> 2; labelled voxels keep their class
    np.testing.assert_array_equal(out[0], [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3])
    blocks = np.zeros((12, 12), np.uint8)
    blocks[1:6, 1:11] = 1
    blocks[6:11, 1:11] = 2
    eroded = erode_or_dilate(blocks, "erode", 1)
    # each class shrinks on its own; the other class counts as outside it
    assert (eroded == 1).sum() == 3 * 8 and (eroded == 2).sum() == 3 * 8
    assert set(np.unique(eroded)) == {0, 1, 2}


@pytest.mark.parametrize("op,radius", [("dilate", 5), ("dilate", 11), ("erode", 5), ("erode", 9)])
def test_boundary_moves_by_the_radius(op, radius):
    sphere = _sphere((56, 56, 56), (28, 28, 28), 16)
    moved = erode_or_dilate(sphere, op, radius)
    # for a ball, erosion/dilation by r moves every surface point by r
    assert abs(hd(moved, sphere) - radius) <= 1.0
    assert abs(asd(moved, sphere) - radius) <= 1.0
    expected_radius = 16 + radius if op == "dilate" else 16 - radius
    assert moved.sum() == pytest.approx(4 / 3 * math.pi * expected_radius ** 3, rel=0.06)


def test_anisotropic_spacing_measures_the_radius_in_physical_units():
    sphere = _sphere((40, 40, 20), (20, 20, 10), 6)
    out = erode_or_dilate(sphere, "dilate", 4.0, spacing=(1.0, 1.0, 2.0))
    # 4 units = 4 voxels in-plane but only 2 voxels along z
    assert out[20, 20, 10 + 6 + 2] == 1 and out[20, 20, 10 + 6 + 3] == 0
    assert out[20 + 6 + 4, 20, 10] == 1 and out[20 + 6 + 5, 20, 10] == 0


# ------------------------------------------------------------------ the draw
@pytest.mark.parametrize(
    "fraction,n,expected", [(0.25, 80, 20), (0.5, 80, 40), (0.75, 80, 60), (0.25, 10, 3), (0.5, 5, 3), (0.75, 6, 5), (0.0, 9, 0), (1.0, 9, 9)]
)
def test_exactly_round_half_up_cases_are_noisy(fraction, n, expected):
    assert num_noisy_cases(fraction, n) == expected
    plan = plan_label_noise([f"c{i}" for i in range(n)], fraction, seed=1)
    assert sum(r["noisy"] for r in plan) == expected
    for r in plan:
        if r["noisy"]:
            assert r["operation"] in ("erode", "dilate") and 5 <= r["radius"] <= 18
        else:
            assert r["operation"] is None and r["radius"] == 0


def test_plan_is_seeded_and_covers_the_range():
    cases = [f"case_{i:03d}" for i in range(80)]
    a = plan_label_noise(cases, 0.5, seed=7)
    assert a == plan_label_noise(list(reversed(cases)), 0.5, seed=7)  # order of the input does not matter
    assert a != plan_label_noise(cases, 0.5, seed=8)
    radii = [r["radius"] for _ in range(20) for r in plan_label_noise(cases, 1.0, seed=_) if r["noisy"]]
    assert min(radii) == 5 and max(radii) == 18  # inclusive bounds
    ops = [r["operation"] for r in plan_label_noise(cases, 1.0, seed=0)]
    assert 25 < ops.count("erode") < 55  # about half and half


def test_corrupt_labels_in_memory():
    labels = {f"c{i}": _sphere((40, 40, 40), (20, 20, 20), 10 + i % 3) for i in range(6)}
    noisy, records = corrupt_labels(labels, 0.5, seed=2, radius_range=(3, 4))
    assert sum(r["noisy"] for r in records) == 3
    for r in records:
        before, after = labels[r["case"]], noisy[r["case"]]
        assert r["foreground_before"] == before.sum() and r["foreground_after"] == after.sum()
        if not r["noisy"]:
            np.testing.assert_array_equal(after, before)
        else:
            np.testing.assert_array_equal(after, erode_or_dilate(before, r["operation"], r["radius"]))


# ------------------------------------------------------------------ dataset folders
def _h5_labels(root, key):
    out = {}
    for case in (root / "train.list").read_text().split():
        with h5py.File(root / case / "mri_norm2.h5", "r") as f:
            out[case] = f[key][()]
    return out


def test_corrupt_h5_dataset(h5_root):
    clean = _h5_labels(h5_root, "label")
    manifest = corrupt_dataset(h5_root, 0.5, seed=3, radius_range=(2, 3))
    noisy = _h5_labels(h5_root, "label_noisy")
    assert _h5_labels(h5_root, "label").keys() == clean.keys()
    for case, lab in _h5_labels(h5_root, "label").items():
        np.testing.assert_array_equal(lab, clean[case])  # the clean labels are untouched
    assert manifest["num_noisy"] == 3 and manifest["target"] == "label_noisy" and manifest["seed"] == 3
    for rec in manifest["cases"]:
        expected = erode_or_dilate(clean[rec["case"]], rec["operation"], rec["radius"]) if rec["noisy"] else clean[rec["case"]]
        np.testing.assert_array_equal(noisy[rec["case"]], expected)
    on_disk = json.loads((h5_root / "label_noisy_manifest.json").read_text())
    assert on_disk["cases"] == manifest["cases"]
    rows = list(csv.DictReader(open(h5_root / "label_noisy_manifest.csv")))
    assert [r["case"] for r in rows] == [c["case"] for c in manifest["cases"]]
    assert {r["seed"] for r in rows} == {"3"}
    # the training set reads the noisy labels, the evaluation the clean ones
    train = LAH5Dataset(h5_root, label_key="label_noisy", crop_size=None, augment=False)
    rec = next(r for r in manifest["cases"] if r["noisy"])
    np.testing.assert_array_equal(train[train.cases.index(rec["case"])]["label"].numpy(), noisy[rec["case"]])


def test_corrupt_dataset_is_deterministic(h5_root, nifti_root, tmp_path):
    first = corrupt_dataset(h5_root, 0.5, seed=9, radius_range=(2, 4))
    labels_first = _h5_labels(h5_root, "label_noisy")
    second = corrupt_dataset(h5_root, 0.5, seed=9, radius_range=(2, 4))
    assert first["cases"] == second["cases"]
    for case, lab in _h5_labels(h5_root, "label_noisy").items():
        np.testing.assert_array_equal(lab, labels_first[case])
    # same draw whatever the layout (same case names, same seed)
    nifti = corrupt_dataset(nifti_root, 0.5, seed=9, radius_range=(2, 4))
    assert [(r["case"], r["operation"], r["radius"]) for r in nifti["cases"]] == [
        (r["case"], r["operation"], r["radius"]) for r in first["cases"]
    ]
    other = corrupt_dataset(h5_root, 0.5, seed=10, radius_range=(2, 4), suffix="noisy_b")
    assert [(r["noisy"], r["radius"]) for r in other["cases"]] != [(r["noisy"], r["radius"]) for r in first["cases"]]
    assert "label_noisy_b" in h5py.File(h5_root / "case_000" / "mri_norm2.h5", "r")


def test_corrupt_nifti_dataset(nifti_root):
    manifest = corrupt_dataset(nifti_root, 0.75, seed=4, radius_range=(1, 2))
    assert manifest["num_noisy"] == 5 and manifest["target"] == "labelsTr_noisy"
    assert (nifti_root / "labelsTr_noisy_manifest.json").is_file()
    for rec in manifest["cases"]:
        clean_path = nifti_root / "labelsTr" / f"{rec['case']}.nii.gz"
        noisy_path = nifti_root / "labelsTr_noisy" / f"{rec['case']}.nii.gz"
        clean, noisy = nib.load(str(clean_path)), nib.load(str(noisy_path))
        np.testing.assert_array_equal(noisy.affine, clean.affine)
        expected = np.asarray(clean.dataobj)
        if rec["noisy"]:
            expected = erode_or_dilate(expected, rec["operation"], rec["radius"])
        else:
            assert noisy_path.read_bytes() == clean_path.read_bytes()  # clean cases copied byte for byte
        np.testing.assert_array_equal(np.asarray(noisy.dataobj), expected)
    ds = NiftiDataset(nifti_root, label_dir="labelsTr_noisy", crop_size=None, augment=False)
    assert len(ds) == 6
    with pytest.raises(FileExistsError, match="labelsTr_noisy"):
        corrupt_dataset(nifti_root, 0.75, seed=4, overwrite=False)
    # radii in physical units from the headers (spacing 1 here, so the same draw and result)
    header = corrupt_dataset(nifti_root, 0.75, seed=4, radius_range=(1, 2), spacing="header", suffix="hdr")
    assert [r["foreground_after"] for r in header["cases"]] == [r["foreground_after"] for r in manifest["cases"]]


def test_bad_noise_arguments():
    label = np.zeros((5, 5), np.uint8)
    with pytest.raises(ValueError, match="op must be"):
        erode_or_dilate(label, "open", 2)
    with pytest.raises(ValueError, match="radius"):
        erode_or_dilate(label, "erode", -1)
    with pytest.raises(ValueError, match="spacing"):
        erode_or_dilate(label, "erode", 1, spacing=(1.0, 0.0))
    with pytest.raises(TypeError, match="integer"):
        erode_or_dilate(label.astype(float), "erode", 1)
    with pytest.raises(ValueError, match="negative"):
        erode_or_dilate(label.astype(np.int8) - 1, "erode", 1)
    with pytest.raises(ValueError, match="fraction"):
        plan_label_noise(["a"], -0.1, seed=0)
    with pytest.raises(ValueError, match="seed"):
        plan_label_noise(["a"], 0.5, seed=-3)
    with pytest.raises(ValueError, match="duplicate"):
        plan_label_noise(["a", "a"], 0.5, seed=0)
