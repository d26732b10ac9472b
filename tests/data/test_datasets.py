"""LAH5Dataset / NiftiDataset: shapes, dtypes, normalisation, crops, determinism, label overrides."""
import h5py
import nibabel as nib
import numpy as np
import torch
from torch.utils.data import DataLoader

from .conftest import SMALL_SHAPE
from pyseg_noise.data import (
    LAH5Dataset,
    NiftiDataset,
    detect_layout,
    open_dataset,
    random_crop,
    random_rot_flip,
    whole_volume_loader,
    zscore,
)


def _raw_h5(root, case, key="label"):
    with h5py.File(root / case / "mri_norm2.h5", "r") as f:
        return f["image"][()], f[key][()]


def _datasets(h5_root, nifti_root, **kwargs):
    return [LAH5Dataset(h5_root, "train", **kwargs), NiftiDataset(nifti_root, "train", **kwargs)]


def test_items_shapes_dtypes_and_default_crop(h5_root, nifti_root):
    for ds in _datasets(h5_root, nifti_root, seed=0):
        assert len(ds) == 6 and ds.cases[0] == "case_000"
        item = ds[1]
        assert item["case"] == "case_001"
        # the default crop is PINT's 112 x 112 x 80; the 24 x 20 x 16 volumes are zero-padded up to it
        assert item["image"].shape == (1, 112, 112, 80) and item["image"].dtype == torch.float32
        assert item["label"].shape == (112, 112, 80) and item["label"].dtype == torch.int64
        # padding never invents foreground: every label voxel of the case is still there
        _, raw_label = _raw_h5(h5_root, "case_001")
        assert int(item["label"].sum()) == int(raw_label.sum())


def test_whole_volumes_are_zscored_and_match_the_files(h5_root, nifti_root):
    image, label = _raw_h5(h5_root, "case_007")
    for root in (h5_root, nifti_root):
        ds = open_dataset(root, "test")  # test split: whole volumes, no augmentation
        assert ds.crop_size is None and not ds.augment and ds.cases == ["case_006", "case_007"]
        item = ds[1]
        assert item["image"].shape == (1, *SMALL_SHAPE) and item["label"].shape == SMALL_SHAPE
        x = item["image"].double()
        assert abs(float(x.mean())) < 1e-5 and abs(float(x.std(unbiased=False)) - 1) < 1e-5
        expected = (image - image.mean(dtype=np.float64)) / image.std(dtype=np.float64)
        np.testing.assert_allclose(item["image"][0].numpy(), expected, atol=1e-5)
        np.testing.assert_array_equal(item["label"].numpy(), label)


def test_crop_sizes_padding_and_content(h5_root):
    # image = label * 10 + position code, so a crop/rotation must move both the same way
    ds = LAH5Dataset(h5_root, "train", crop_size=(16, 12, 20), normalize=False, seed=3)
    ds.load_case = lambda case: (
        (np.arange(np.prod(SMALL_SHAPE), dtype=np.float32).reshape(SMALL_SHAPE) * 0 + 1 + 10 * _raw_h5(h5_root, case)[1])[None],
        _raw_h5(h5_root, case)[1].astype(np.int64),
    )
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (1, 16, 12, 20) and item["label"].shape == (16, 12, 20)
        img, lab = item["image"][0].numpy(), item["label"].numpy()
        # z (16 -> 20) is padded with 2 voxels of zeros each side; inside, image == 1 + 10 * label
        inside = img != 0
        assert inside[:, :, 2:18].all() and not inside[:, :, :2].any() and not inside[:, :, 18:].any()
        np.testing.assert_array_equal(img[inside], 1 + 10 * lab[inside])
        assert not lab[~inside].any()


def test_rot_flip_moves_image_and_label_together():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, size=(7, 7, 5))
    image = (label * 2.0 + 1)[None].astype(np.float32)
    seen = set()
    for _ in range(60):
        img, lab = random_rot_flip(image, label, rng)
        np.testing.assert_array_equal(img[0], lab * 2.0 + 1)
        # z is never touched: slice sums along x, y are kept per slice
        np.testing.assert_array_equal(lab.sum(axis=(0, 1)), label.sum(axis=(0, 1)))
        seen.add(lab.tobytes())
    assert len(seen) == 8  # the 8 in-plane symmetries of the square
    # the LA code's variant (always flip) only produces the 4 reflections
    la = {random_rot_flip(image, label, rng, always_flip=True)[1].tobytes() for _ in range(60)}
    assert len(la) == 4 and label.tobytes() not in la


def test_random_crop_and_zscore_units():
    rng = np.random.default_rng(1)
    image = rng.normal(5.0, 3.0, size=(2, 10, 9, 4)).astype(np.float32)
    label = np.ones((10, 9, 4), np.int64)
    img, lab = random_crop(image, label, (6, 12, 4), rng)
    assert img.shape == (2, 6, 12, 4) and lab.shape == (6, 12, 4)
    # y (9 -> 12) padded 1 before, 2 after
    assert not lab[:, 0].any() and lab[:, 1:10].all() and not lab[:, 10:].any()
    z = zscore(image)
    np.testing.assert_allclose(z.reshape(2, -1).mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(z.reshape(2, -1).std(1), 1, atol=1e-5)
    assert not zscore(np.full((1, 3, 3, 3), 7.0)).any()  # constant channel: zeros, no NaN


def test_determinism_with_seed_and_epochs(h5_root, nifti_root):
    for make in (lambda s: LAH5Dataset(h5_root, seed=s), lambda s: NiftiDataset(nifti_root, seed=s)):
        a, b, c = make(11), make(11), make(12)
        for i in range(len(a)):
            ia, ib = a[i], b[i]
            assert torch.equal(ia["image"], ib["image"]) and torch.equal(ia["label"], ib["label"])
        assert any(not torch.equal(a[i]["image"], c[i]["image"]) for i in range(len(a)))
        first = a[2]["image"]
        assert torch.equal(a[2]["image"], first)  # re-reading the same item in the same epoch
        a.set_epoch(1)
        assert not torch.equal(a[2]["image"], first)  # a new epoch draws new crops


def test_worker_count_does_not_change_items(h5_root):
    ds = LAH5Dataset(h5_root, seed=4, crop_size=(16, 16, 16))
    direct = [ds[i]["image"] for i in range(len(ds))]
    loader = DataLoader(ds, batch_size=2, shuffle=False, num_workers=2)
    batched = torch.cat([b["image"] for b in loader])
    assert torch.equal(batched, torch.stack(direct))


def test_label_override_h5(h5_root):
    noisy = {}
    for case in ("case_000", "case_003"):
        with h5py.File(h5_root / case / "mri_norm2.h5", "r+") as f:
            noisy[case] = np.zeros(SMALL_SHAPE, np.uint8)
            noisy[case][5:9, 4:8, 3:6] = 1
            f.create_dataset("label_noisy", data=noisy[case])
    # a separate file for one case via label_paths
    override = h5_root / "override.h5"
    other = np.zeros(SMALL_SHAPE, np.uint8)
    other[1:3, 1:3, 1:3] = 1
    with h5py.File(override, "w") as f:
        f.create_dataset("label", data=other)
    ds = LAH5Dataset(h5_root, cases=["case_000", "case_003"], label_key="label_noisy", crop_size=None, augment=False)
    for i, case in enumerate(ds.cases):
        np.testing.assert_array_equal(ds[i]["label"].numpy(), noisy[case])
    ds = LAH5Dataset(h5_root, label_paths={"case_002": override}, crop_size=None, augment=False)
    np.testing.assert_array_equal(ds[2]["label"].numpy(), other)
    np.testing.assert_array_equal(ds[1]["label"].numpy(), _raw_h5(h5_root, "case_001")[1])  # others keep theirs


def test_label_override_nifti(nifti_root):
    (nifti_root / "labelsTr_alt").mkdir()
    alt = {}
    for i in range(6):
        case = f"case_{i:03d}"
        src = nib.load(str(nifti_root / "labelsTr" / f"{case}.nii.gz"))
        alt[case] = np.zeros(SMALL_SHAPE, np.uint8)
        alt[case][i : i + 3, 2:5, 2:5] = 1
        nib.save(nib.Nifti1Image(alt[case], src.affine), str(nifti_root / "labelsTr_alt" / f"{case}.nii.gz"))
    ds = NiftiDataset(nifti_root, label_dir="labelsTr_alt", crop_size=None, augment=False)
    for i, case in enumerate(ds.cases):
        np.testing.assert_array_equal(ds[i]["label"].numpy(), alt[case])
    clean = NiftiDataset(nifti_root, crop_size=None, augment=False)
    assert clean.num_classes == 2 and clean.num_channels == 1  # from dataset.json
    path = nifti_root / "labelsTr_alt" / "case_004.nii.gz"
    mixed = NiftiDataset(nifti_root, label_paths={"case_001": path}, crop_size=None, augment=False)
    np.testing.assert_array_equal(mixed[1]["label"].numpy(), alt["case_004"])
    np.testing.assert_array_equal(mixed[0]["label"].numpy(), clean[0]["label"].numpy())


def test_whole_volume_loader_and_layout_detection(h5_root, nifti_root):
    assert detect_layout(h5_root) == "h5" and detect_layout(nifti_root) == "nifti"
    for root in (h5_root, nifti_root):
        batches = list(whole_volume_loader(root, "test"))
        assert [b["case"] for b in batches] == [["case_006"], ["case_007"]]
        assert batches[0]["image"].shape == (1, 1, *SMALL_SHAPE) and batches[0]["label"].shape == (1, *SMALL_SHAPE)


def test_la_release_layout_with_lists_one_level_up(h5_root):
    # the public LA release: data/train.list beside data/2018LA_Seg_Training Set/<case>/
    data = h5_root.parent / "data"
    inner = data / "2018LA_Seg_Training Set"
    data.mkdir()
    h5_root.rename(inner)
    (inner / "train.list").rename(data / "train.list")
    ds = LAH5Dataset(inner, "train", crop_size=None, augment=False)
    assert len(ds) == 6 and ds[0]["label"].shape == SMALL_SHAPE
