"""Distillation: exact inverse transforms, MD/DD/HD against hand-built cases, sliding window, pseudo labels on disk."""
import copy
import json

import numpy as np
import pytest
import torch

from pyseg_noise.cli import build_parser
from pyseg_noise.data import LA_CASE_FOLDER, LAH5Dataset, NiftiDataset, generate_synthetic_dataset, open_dataset
from pyseg_noise.models import VNet
from pyseg_noise.training.distill import (
    DD_TRANSFORMS,
    GeometricTransform,
    data_distillation,
    data_distillation_transforms,
    distill,
    distill_dataset,
    distillation_variants,
    hierarchical_distillation,
    majority_vote,
    model_distillation,
    training_case_names,
    vote,
    predict_probs,
    read_case_image,
    write_pseudo_labels,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def identity(x):
    """A "network" whose logits are its input: any transform error shows in the output."""
    return x


# ----------------------------------------------------------------------------- the 12 transforms
def test_the_12_transforms_are_the_documented_ones():
    assert len(DD_TRANSFORMS) == 12
    assert [(t.k, t.flip) for t in DD_TRANSFORMS] == [(k, f) for k in range(4) for f in (None, 0, 1)]
    assert all(t.plane == (0, 1) for t in DD_TRANSFORMS)
    # as documented: 8 distinct maps (flip Y o rot k == flip X o rot k+2)
    x = torch.arange(4 * 4 * 3.0).reshape(1, 1, 4, 4, 3)
    images = {tuple(t.apply(x).flatten().tolist()) for t in DD_TRANSFORMS}
    assert len(images) == 8
    # the slice axis is never moved
    for t in DD_TRANSFORMS:
        assert t.apply(x).shape[-1] == 3
    distinct = data_distillation_transforms(flip_axes=(None, 0, 2))
    assert len({tuple(t.apply(x).flatten().tolist()) for t in distinct}) == 12


@pytest.mark.parametrize("t", DD_TRANSFORMS, ids=lambda t: t.name)
def test_each_transform_is_inverted_exactly(t):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5, 4)  # X != Y: an odd rotation swaps them
    y = t.apply(x)
    assert torch.equal(t.invert(y), x)
    # an identity network through DD with this one transform gives back its input, bit for bit
    probs = torch.softmax(x, 1)
    result = data_distillation(identity, probs, [t], output="probs", return_vote=True)
    assert torch.equal(result.probs, probs)
    assert torch.equal(result.labels, x.argmax(1))
    torch.testing.assert_close(data_distillation(identity, x, [t], return_vote=True).probs, probs)


def test_rotation_direction_matches_numpy():
    x = np.arange(6 * 5 * 2).reshape(6, 5, 2)
    t = GeometricTransform(k=1, flip=1)
    out = t.apply(torch.from_numpy(x)[None, None])[0, 0].numpy()
    np.testing.assert_array_equal(out, np.flip(np.rot90(x, 1, axes=(0, 1)), axis=1))


def test_dd_of_an_equivariant_model_is_the_model():
    torch.manual_seed(1)
    x = torch.randn(1, 2, 8, 8, 4)
    result = data_distillation(identity, x, return_vote=True)
    torch.testing.assert_close(result.probs, torch.softmax(x, 1))
    assert torch.equal(result.labels, x.argmax(1))
    assert int(result.votes.sum(1).min()) == 12 and int(result.votes.max(1).values.min()) == 12
    assert torch.equal(hierarchical_distillation([identity, identity], x), x.argmax(1))


def test_transform_arguments_are_checked():
    with pytest.raises(ValueError, match="k must be"):
        GeometricTransform(k=4)
    with pytest.raises(ValueError, match="flip"):
        GeometricTransform(k=0, flip=3)
    with pytest.raises(ValueError, match="plane"):
        GeometricTransform(k=1, plane=(1, 1))
    with pytest.raises(ValueError, match="flip_axes"):
        data_distillation_transforms(flip_axes=(0, 0))


# ----------------------------------------------------------------------------- MD / HD
def tiny_vnet(seed):
    torch.manual_seed(seed)
    return VNet(1, 3, n_filters=2, has_dropout=False)


def test_md_of_identical_models_equals_one_model():
    net = tiny_vnet(0)
    x = torch.randn(2, 1, 16, 16, 16)
    single = predict_probs(net, x)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(single, torch.softmax(net(x), 1))
    three = model_distillation([net, copy.deepcopy(net), copy.deepcopy(net)], x, return_vote=True)
    torch.testing.assert_close(three.probs, single)
    assert torch.equal(three.labels, single.argmax(1))
    other = tiny_vnet(1)
    expected = (single + predict_probs(other, x)) / 2
    pair = model_distillation([net, other], x, return_vote=True)
    torch.testing.assert_close(pair.probs, expected)
    assert torch.equal(pair.labels, expected.argmax(1))
    # two voters: a disagreement is a 1:1 tie, so the mean softmax decides (here class 1, the surer vote)
    assert vote([probs_of([0.6, 0.4]), probs_of([0.1, 0.9])]).labels.item() == 1


def constant(logits):
    return lambda x: logits.expand(x.shape[0], *logits.shape[1:])


def test_hd_majority_vote_hand_built():
    # 3 voxels, 3 classes; three "models" (no transform: T x 1 votes)
    def logits(*preds):  # a one-hot-ish logit per voxel
        z = torch.full((1, 3, 3, 1, 1), -2.0)
        for v, c in enumerate(preds):
            z[0, c, v] = 2.0
        return z

    models = [constant(logits(0, 1, 2)), constant(logits(0, 2, 1)), constant(2 * logits(1, 2, 0))]
    result = hierarchical_distillation(models, torch.zeros(1, 1, 3, 1, 1), [GeometricTransform(0)],
                                       return_vote=True)
    labels, votes = result.labels, result.votes
    assert votes[0, :, :, 0, 0].T.tolist() == [[2, 1, 0], [0, 1, 2], [1, 1, 1]]
    # voxel 0: class 0 wins 2:1; voxel 1: class 2 wins 2:1; voxel 2: a three-way tie, and the
    # third model's vote (class 0) is the most confident -> class 0 by the mean softmax
    assert labels[0, :, 0, 0].tolist() == [0, 2, 0]
    # an exact tie (two classes, mirrored predictions: the mean softmax ties bit for bit): the lowest class
    mirrored = [constant(torch.tensor([2.0, -2.0]).reshape(1, 2, 1, 1, 1)),
                constant(torch.tensor([-2.0, 2.0]).reshape(1, 2, 1, 1, 1))]
    assert hierarchical_distillation(mirrored, torch.zeros(1, 1, 1, 1, 1), [GeometricTransform(0)]).item() == 0
    assert hierarchical_distillation(mirrored[::-1], torch.zeros(1, 1, 1, 1, 1), [GeometricTransform(0)]).item() == 0
    # a tie broken by the mean softmax: two votes each, class 1's votes are more confident
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 6.0])
    m = [constant(v.reshape(1, 2, 1, 1, 1)) for v in (a, a, b, b)]
    assert hierarchical_distillation(m, torch.zeros(1, 1, 1, 1, 1), [GeometricTransform(0)]).item() == 1
    # majority_vote alone
    assert majority_vote(torch.tensor([[[1], [3], [3]]])).tolist() == [[1]]
    assert majority_vote(torch.tensor([[[1.], [3.], [3.]]]), torch.tensor([[[.5], [.2], [.3]]])).tolist() == [[2]]


def probs_of(*rows):
    """Probabilities Tensor[1, C, n, 1, 1] from per-voxel rows of class probabilities."""
    return torch.tensor(rows, dtype=torch.float64).T.reshape(1, len(rows[0]), len(rows), 1, 1)


class Replay:
    """A "model" that returns preset logits, one per call, in order (one call per transform)."""

    def __init__(self, outputs):
        self.outputs = list(outputs)

    def __call__(self, x):
        return self.outputs.pop(0)


def test_nested_hd_differs_from_a_flat_vote():
    # 2 classes, one voxel; T = 3 models x K = 3 views. Model 0's views all say 1; models 1 and 2 say 0, 0, 1.
    # Nested (Eq. 10): DD labels 1, 0, 0 -> HD 0. A flat vote over the 9 views: class 1 has 5 votes -> 1.
    say = {0: [0.7, 0.3], 1: [0.4, 0.6]}
    views = [[1, 1, 1], [0, 0, 1], [0, 0, 1]]
    preds = [[probs_of(say[c]) for c in model] for model in views]
    dd = [vote(p) for p in preds]
    assert [d.labels.item() for d in dd] == [1, 0, 0]
    nested = vote(dd)
    flat = vote([p for model in preds for p in model])
    assert nested.labels.item() == 0 and flat.labels.item() == 1
    assert nested.votes[0, :, 0, 0, 0].tolist() == [2, 1] and flat.votes[0, :, 0, 0, 0].tolist() == [4, 5]
    # the nested mean softmax is the mean over all 9 views (equal K per model)
    torch.testing.assert_close(nested.probs, flat.probs)
    # the same through hierarchical_distillation: each model is called once per transform, in order
    logits = {c: torch.log(probs_of(say[c])).float() for c in (0, 1)}
    models = [Replay([logits[c] for c in model]) for model in views]
    three = [GeometricTransform(0), GeometricTransform(0, flip=0), GeometricTransform(2)]
    x = torch.zeros(1, 1, 1, 1, 1)
    assert hierarchical_distillation(models, x, three).item() == 0
    models = [Replay([logits[c] for c in model]) for model in views]
    got = distillation_variants(models, x, three)
    assert got["hd"].item() == 0 and [got[f"dd{t}"].item() for t in range(3)] == [1, 0, 0]
    # MD votes over the models' plain (identity-view) predictions: 1, 0, 0 -> 0
    assert got["md"].item() == 0 and [got[f"model{t}"].item() for t in range(3)] == [1, 0, 0]


def test_md_is_a_majority_not_a_mean_softmax():
    # one voxel, 3 classes: two models lean to class 1, one is sure of class 2; the mean softmax picks 2
    preds = [probs_of([0.1, 0.5, 0.4]), probs_of([0.1, 0.5, 0.4]), probs_of([0.0, 0.0, 1.0])]
    mean = sum(preds) / 3
    assert mean.argmax(1).item() == 2
    models = [constant(torch.log(p.clamp_min(1e-12)).float()) for p in preds]
    assert model_distillation(models, torch.zeros(1, 1, 1, 1, 1)).item() == 1
    assert distill("md", models, torch.zeros(1, 1, 1, 1, 1)).item() == 1
    # DD likewise: 12 views, 7 vote class 0 weakly, 5 vote class 1 strongly
    views = [torch.log(probs_of([0.55, 0.45])).float()] * 7 + [torch.log(probs_of([0.01, 0.99])).float()] * 5
    result = data_distillation(Replay(views), torch.zeros(1, 1, 1, 1, 1), return_vote=True)
    assert result.labels.item() == 0 and result.probs[0, :, 0, 0, 0].argmax().item() == 1
    with pytest.raises(ValueError, match="at least one"):
        vote([])
    with pytest.raises(ValueError, match="shape"):
        vote([probs_of([0.5, 0.5]), probs_of([0.5, 0.5], [0.5, 0.5])])


def test_distillation_variants_equal_the_single_distillations():
    nets = [tiny_vnet(s) for s in (4, 5, 6)]
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(7))
    got = distillation_variants(nets, x)
    assert sorted(got) == ["dd0", "dd1", "dd2", "hd", "md", "model0", "model1", "model2"]
    for t, net in enumerate(nets):
        assert torch.equal(got[f"model{t}"], predict_probs(net, x).argmax(1))
        assert torch.equal(got[f"dd{t}"], distill("dd", [net], x))
    assert torch.equal(got["md"], distill("md", nets, x))
    assert torch.equal(got["hd"], distill("hd", nets, x))
    # the untrained nets disagree, so the variants are not all one label map
    assert len({tuple(v.flatten().tolist()) for v in got.values()}) > 1
    # without the identity among the transforms, each model predicts x once more
    no_identity = [GeometricTransform(1), GeometricTransform(2, flip=0)]
    got = distillation_variants(nets[:2], x, no_identity)
    assert torch.equal(got["model1"], predict_probs(nets[1], x).argmax(1))
    assert torch.equal(got["hd"], hierarchical_distillation(nets[:2], x, no_identity))
    assert torch.equal(got["dd0"], data_distillation(nets[0], x, no_identity))


def test_md_and_dd_argmax_ties_go_to_the_lowest_class():
    z = torch.zeros(1, 3, 2, 2, 1)
    assert distill("md", [identity], z).eq(0).all()
    assert distill("dd", [identity], z).eq(0).all()
    with pytest.raises(ValueError, match="method"):
        distill("xd", [identity], z)


def test_sliding_window_path_equals_the_direct_path():
    torch.manual_seed(2)
    x = torch.randn(1, 3, 12, 10, 6)
    # an equivariant "network": overlapping windows average identical values
    direct = data_distillation(identity, x, return_vote=True)
    windows = data_distillation(identity, x, patch_size=(8, 8, 4), stride=(4, 3, 2), return_vote=True)
    torch.testing.assert_close(windows.probs, direct.probs)
    assert torch.equal(windows.labels, direct.labels)
    net = tiny_vnet(3)
    v = torch.randn(1, 1, 16, 16, 16)
    torch.testing.assert_close(model_distillation([net], v, patch_size=16, return_vote=True).probs,
                               model_distillation([net], v, return_vote=True).probs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="Tensor\\[B, C_in, X, Y, Z\\]"):
        model_distillation([identity], torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="at least one"):
        model_distillation([], torch.zeros(1, 1, 2, 2, 2))
    with pytest.raises(TypeError, match="models"):
        model_distillation(3, torch.zeros(1, 1, 2, 2, 2))


# ----------------------------------------------------------------------------- on disk
@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    base = tmp_path_factory.mktemp("distill")
    h5 = generate_synthetic_dataset(base / "h5", n_train=3, n_test=1, shape=(16, 16, 16), seed=0)
    nii = generate_synthetic_dataset(base / "nii", n_train=3, n_test=1, shape=(16, 16, 16), layout="nifti", seed=0)
    return h5, nii


def fake_label(case, shape):
    return (np.indices(shape).sum(0) % (2 + int(case[-1]) % 2)).astype(np.uint8) % 2


@pytest.mark.parametrize("layout", ["h5", "nifti"])
def test_pseudo_labels_inside_the_dataset_are_read_back(datasets, layout):
    info = datasets[0] if layout == "h5" else datasets[1]
    root = info["root"]
    train = info["train"]
    pseudo = {c: fake_label(c, (16, 16, 16)) for c in train[1:]}
    out = write_pseudo_labels(root, pseudo)
    assert out["mode"] == "dataset" and sorted(out["label_paths"]) == sorted(pseudo)
    if layout == "h5":
        ds = LAH5Dataset(root, "train", label_key="label_pseudo", crop_size=None, augment=False)
        clean = LAH5Dataset(root, "train", crop_size=None, augment=False)
    else:
        ds = NiftiDataset(root, "train", label_dir="labelsTr_pseudo", crop_size=None, augment=False)
        clean = NiftiDataset(root, "train", crop_size=None, augment=False)
    for i, case in enumerate(ds.cases):
        got = ds[i]["label"].numpy()
        expected = pseudo[case] if case in pseudo else clean[i]["label"].numpy()
        np.testing.assert_array_equal(got, expected)
    manifest = json.loads(open(out["manifest"]).read())
    assert manifest["cases"] == sorted(pseudo)
    with pytest.raises(FileExistsError):
        write_pseudo_labels(root, pseudo, overwrite=False)


@pytest.mark.parametrize("layout", ["h5", "nifti"])
def test_pseudo_label_folder_is_a_label_override(datasets, tmp_path, layout):
    info = datasets[0] if layout == "h5" else datasets[1]
    root, train = info["root"], info["train"]
    pseudo = {train[0]: fake_label(train[0], (16, 16, 16))}
    out = write_pseudo_labels(root, pseudo, out_dir=tmp_path / "pl")
    assert out["mode"] == "folder"
    paths = out["label_paths"]
    cls = LAH5Dataset if layout == "h5" else NiftiDataset
    ds = cls(root, "train", label_paths=paths, crop_size=None, augment=False)
    np.testing.assert_array_equal(ds[0]["label"].numpy(), pseudo[train[0]])
    with pytest.raises(ValueError, match="not training cases"):
        write_pseudo_labels(root, {"nope": pseudo[train[0]]}, out_dir=tmp_path / "pl2")
    with pytest.raises(ValueError, match="shape"):
        write_pseudo_labels(root, {train[0]: np.zeros((4, 4, 4), np.uint8)}, out_dir=tmp_path / "pl3")


def test_distill_dataset_labels_whole_volumes(datasets):
    info = datasets[0]
    torch.manual_seed(4)
    net = VNet(1, 2, n_filters=2, has_dropout=False)
    cases = info["train"][:2]
    labels = distill_dataset([net], info["root"], cases, method="hd", patch_size=(16, 16, 16), stride=(8, 8, 8),
                             transforms=[GeometricTransform(0)])
    for case in cases:
        image = torch.from_numpy(read_case_image(info["root"], case))[None]
        np.testing.assert_array_equal(labels[case], predict_probs(net, image).argmax(1)[0].numpy())
        assert labels[case].dtype == np.uint8 and labels[case].shape == (16, 16, 16)


def test_the_command_line_has_the_three_distillations():
    distill = build_parser()._subparsers._group_actions[0].choices["distill"]
    assert set(distill._subparsers._group_actions[0].choices) == {"md", "dd", "hd"}


def test_training_cases_read_the_configured_split(tmp_path):
    root = tmp_path / "h5"
    generate_synthetic_dataset(root, n_train=3, n_test=1, shape=(16, 16, 16), seed=0)
    assert training_case_names(root, "h5") == ["case_000", "case_001", "case_002"]
    (root / "mine.list").write_text("case_002\ncase_000\n")
    assert training_case_names(root, "h5", "mine") == ["case_002", "case_000"]
    # write_pseudo_labels accepts only cases of the configured split
    label = np.zeros((16, 16, 16), np.uint8)
    with pytest.raises(ValueError, match="not training cases"):
        write_pseudo_labels(root, {"case_001": label}, out_dir=tmp_path / "out", split="mine")
    assert write_pseudo_labels(root, {"case_002": label}, out_dir=tmp_path / "out", split="mine")["cases"] == [
        "case_002"]


@pytest.mark.parametrize("root_at", ["lists", "cases"])
def test_distillation_reads_the_public_la_layouts(tmp_path, root_at):
    """Case folders inside ``2018LA_Seg_Training Set/``, the root at the lists (SSL4MIS) or at the cases (UA-MT)."""
    from pyseg_noise.training.self_training import make_case_subset

    data = tmp_path / "data"
    info = generate_synthetic_dataset(data, n_train=3, n_test=1, shape=(16, 16, 16), seed=0)
    images = {c: read_case_image(data, c) for c in info["train"]}
    (data / LA_CASE_FOLDER).mkdir()
    for case in info["train"] + info["test"]:
        (data / case).rename(data / LA_CASE_FOLDER / case)
    root = data if root_at == "lists" else data / LA_CASE_FOLDER

    assert training_case_names(root) == info["train"]
    for case, image in images.items():
        np.testing.assert_array_equal(read_case_image(root, case), image)
    net = tiny_vnet(5)
    labels = distill_dataset([net], root, info["train"][:2], method="md", patch_size=(16, 16, 16),
                             stride=(8, 8, 8))
    for case, lab in labels.items():
        np.testing.assert_array_equal(lab, predict_probs(net, torch.from_numpy(images[case])[None]).argmax(1)[0])
    # written into the nested case files, and read back by the dataset
    write_pseudo_labels(root, labels)
    pseudo, clean = (LAH5Dataset(root, "train", label_key=key, crop_size=None, augment=False)
                     for key in ("label_pseudo", "label"))
    for i, case in enumerate(pseudo.cases):
        expected = labels[case] if case in labels else clean[i]["label"].numpy()
        np.testing.assert_array_equal(pseudo[i]["label"].numpy(), expected)
    assert write_pseudo_labels(root, labels, out_dir=tmp_path / "out")["cases"] == sorted(labels)
    # the labelled subset of a self-training links the nested case folders
    subset = make_case_subset(root, info["train"][:1], tmp_path / "subset", layout="h5")
    assert open_dataset(subset, "train", crop_size=None, augment=False).cases == info["train"][:1]
