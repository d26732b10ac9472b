"""pyseg_noise.metrics against medpy.metric.binary on random and shaped masks."""
import math

import numpy as np
import pytest
import torch
from medpy.metric import binary as mb
from scipy import ndimage as ndi

from pyseg_noise import metrics as M

DISTANCES = [("asd", M.asd, mb.asd), ("assd", M.assd, mb.assd), ("hd", M.hd, mb.hd), ("hd95", M.hd95, mb.hd95)]


def _random_mask(shape, p, rng):
    return rng.random(shape) < p


def _blob(shape, rng, touch_border=False):
    """A smooth irregular blob; with touch_border it is cut by the array's first faces."""
    grids = np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij")
    centre = [(0.1 if touch_border else 0.5) * s + rng.uniform(-1, 1) for s in shape]
    radii = [rng.uniform(0.2, 0.35) * s for s in shape]
    d = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii))
    wobble = ndi.gaussian_filter(rng.standard_normal(shape), 2.0) * 4.0
    return d + wobble < 1.0


def _pairs():
    rng = np.random.default_rng(1234)
    cases = []
    for shape in [(23, 19), (17, 21, 13)]:
        cases.append(("random", _random_mask(shape, 0.3, rng), _random_mask(shape, 0.4, rng)))
        cases.append(("sparse", _random_mask(shape, 0.02, rng) | (np.arange(np.prod(shape)).reshape(shape) == 5),
                      _random_mask(shape, 0.05, rng) | (np.arange(np.prod(shape)).reshape(shape) == 7)))
        cases.append(("blob", _blob(shape, rng), _blob(shape, rng)))
        cases.append(("border", _blob(shape, rng, touch_border=True), _blob(shape, rng)))
        full = np.ones(shape, bool)
        cases.append(("full", full, _blob(shape, rng)))
    return cases


PAIRS = _pairs()


@pytest.mark.parametrize("kind,pred,ref", PAIRS, ids=[f"{k}-{p.ndim}d" for k, p, _ in PAIRS])
@pytest.mark.parametrize("connectivity", [1, 2, 3])
@pytest.mark.parametrize("spacing", [None, "aniso"])
def test_distances_equal_medpy(kind, pred, ref, connectivity, spacing):
    sp = None if spacing is None else (0.7, 1.3, 2.1)[: pred.ndim]
    # bitwise without spacing (same surface voxels, same order, same arithmetic); with anisotropic
    # spacing equally distant voxels may be picked differently, a difference of a few ulps
    def same(got, want):
        return got == want if sp is None else got == pytest.approx(want, rel=1e-13, abs=0)

    for name, ours, theirs in DISTANCES:
        got = ours(pred, ref, sp, connectivity)
        want = theirs(pred, ref, sp, connectivity)
        assert same(got, want), (name, got, want)
        assert isinstance(got, float)
    grouped = M.surface_distance_metrics(pred, ref, spacing=sp, connectivity=connectivity)
    for name, _, theirs in DISTANCES:
        assert same(grouped[name], theirs(pred, ref, sp, connectivity)), name


@pytest.mark.parametrize("kind,pred,ref", PAIRS, ids=[f"{k}-{p.ndim}d" for k, p, _ in PAIRS])
def test_overlap_equal_medpy(kind, pred, ref):
    assert M.dice(pred, ref) == mb.dc(pred, ref)
    assert M.jaccard(pred, ref) == mb.jc(pred, ref)


def test_surface_distances_equal_medpy_private():
    rng = np.random.default_rng(7)
    pred, ref = _blob((20, 22, 18), rng), _blob((20, 22, 18), rng)
    medpy_sd = getattr(mb, "__surface_distances")
    np.testing.assert_array_equal(M.surface_distances(pred, ref, None, 2), medpy_sd(pred, ref, None, 2))
    np.testing.assert_allclose(
        M.surface_distances(pred, ref, (1.0, 2.0, 0.5), 2), medpy_sd(pred, ref, (1.0, 2.0, 0.5), 2), rtol=1e-13
    )


@pytest.mark.parametrize("spacing", [None, (0.7, 1.3, 2.1)])
@pytest.mark.parametrize("ratio", [0, 10**9], ids=["kdtree", "feature-transform"])
def test_both_nearest_neighbour_paths_equal_medpy(monkeypatch, spacing, ratio):
    import pyseg_noise.metrics.surface_distance as sd

    # force one path: ratio 0 always takes the k-d tree, a huge ratio never does
    monkeypatch.setattr(sd, "_KDTREE_RATIO", ratio)
    rng = np.random.default_rng(5)
    pred, ref = _blob((30, 28, 22), rng), _blob((30, 28, 22), rng)
    medpy_sd = getattr(mb, "__surface_distances")
    for a, b in ((pred, ref), (ref, pred)):
        got, want = sd.surface_distances(a, b, spacing, 1), medpy_sd(a, b, spacing, 1)
        if spacing is None:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-13)


def test_torch_and_integer_inputs():
    rng = np.random.default_rng(3)
    pred, ref = _blob((16, 18, 14), rng), _blob((16, 18, 14), rng)
    want = mb.hd95(pred, ref)
    assert M.hd95(torch.from_numpy(pred.astype(np.int64) * 3), torch.from_numpy(ref).float()) == want
    assert M.dice(torch.from_numpy(pred), ref.astype(np.uint8)) == mb.dc(pred, ref)


def test_hand_computed_values():
    a = np.zeros((5, 5), bool)
    a[1:4, 1:4] = True
    b = np.zeros((5, 5), bool)
    b[2, 2] = True
    # ring of 8 surface voxels: 4 at distance 1, 4 at sqrt(2)
    assert M.asd(a, b) == pytest.approx((4 + 4 * math.sqrt(2)) / 8)
    assert M.asd(b, a) == pytest.approx(1.0)  # centre to the nearest ring voxel
    assert M.hd(a, b) == pytest.approx(math.sqrt(2))
    assert M.dice(a, b) == pytest.approx(2 * 1 / (9 + 1))
    assert M.jaccard(a, b) == pytest.approx(1 / 9)
    # spacing scales the distances along each axis
    assert M.hd(a, b, spacing=(2.0, 3.0)) == pytest.approx(math.sqrt(4 + 9))


def test_empty_masks():
    empty = np.zeros((6, 7, 8), bool)
    some = empty.copy()
    some[2:4, 2:5, 3:6] = True
    assert M.dice(empty, empty) == 1.0 and M.jaccard(empty, empty) == 1.0
    assert M.dice(empty, some) == 0.0 and M.jaccard(some, empty) == 0.0
    for name, ours, _ in DISTANCES:
        assert ours(empty, empty) == 0.0, name
        assert ours(empty, some) == math.inf, name
        assert ours(some, empty) == math.inf, name
    assert M.surface_distances(empty, some).shape == (0,)
    assert np.all(np.isinf(M.surface_distances(some, empty)))


def test_evaluate_multiclass():
    rng = np.random.default_rng(11)
    ref = np.zeros((18, 20, 16), np.int64)
    ref[_blob(ref.shape, rng)] = 1
    ref[2:6, 3:9, 2:7] = 2
    pred = np.zeros_like(ref)
    pred[_blob(ref.shape, rng)] = 1
    pred[3:7, 3:8, 2:8] = 2
    pred[15:17, 1:3, 1:3] = 4  # only in the prediction
    out = M.evaluate_multiclass(torch.from_numpy(pred), ref, spacing=(1.0, 1.5, 2.0), connectivity=2)
    assert sorted(out) == [1, 2, 4]
    for label in (1, 2):
        p, r = pred == label, ref == label
        assert out[label]["dice"] == mb.dc(p, r)
        assert out[label]["jaccard"] == mb.jc(p, r)
        for name, _, theirs in DISTANCES:
            assert out[label][name] == theirs(p, r, (1.0, 1.5, 2.0), 2)
    assert out[4]["dice"] == 0.0 and out[4]["hd"] == math.inf
    only = M.evaluate_multiclass(pred, ref, labels=[3], metrics=("dice", "asd"))
    assert only == {3: {"dice": 1.0, "asd": 0.0}}


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: M.dice(np.zeros((3, 4)), np.zeros((4, 3))), ValueError, "same shape"),
        (lambda: M.hd(np.ones((3, 4)), np.ones((3, 4)), spacing=(1.0,)), ValueError, "spacing"),
        (lambda: M.hd(np.ones((3, 4)), np.ones((3, 4)), spacing=(1.0, -1.0)), ValueError, "spacing"),
        (lambda: M.asd(np.ones((3, 4)), np.ones((3, 4)), connectivity=0), ValueError, "connectivity"),
        (lambda: M.asd(np.ones((3, 4)), np.ones((3, 4)), connectivity=1.5), TypeError, "connectivity"),
        (lambda: M.asd([[1, 0]], np.ones((1, 2))), TypeError, "prediction"),
        (lambda: M.dice(np.array([np.nan, 1.0]), np.ones(2)), ValueError, "NaN"),
        (lambda: M.evaluate_multiclass(np.ones((3, 3), int), np.ones((3, 3), int), metrics=("dsc",)),
         ValueError, "unknown metric"),
        (lambda: M.evaluate_multiclass(np.ones((3, 3)), np.ones((3, 3), int)), TypeError, "integer labels"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
