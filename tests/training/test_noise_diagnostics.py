"""Does PINT's teacher locate the label noise: AUROC, alpha and disagreement on hand-built volumes with known answers."""
import itertools
import math

import numpy as np
import pytest
import torch

from pyseg_noise.reproduce.diagnostics import (auroc, boundary_band, noise_localisation, summarize_diagnostics,
                                               teacher_maps)
from pyseg_noise.training.config import config_from_dict
from pyseg_noise.training.pint import perturbed_teacher_uncertainty
from pyseg_noise.training.trainer import build_method


def _pairwise_auroc(pos, neg):
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_is_the_pairwise_win_rate_with_ties_as_halves():
    rng = np.random.default_rng(0)
    for _ in range(5):
        pos, neg = rng.integers(0, 6, 40), rng.integers(0, 5, 55)  # many ties
        assert auroc(pos, neg) == pytest.approx(_pairwise_auroc(pos, neg), abs=1e-12)
    assert auroc([1.0, 2.0], [0.0]) == 1.0 and auroc([0.0], [1.0, 2.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0]) == 0.5
    assert math.isnan(auroc([], [1.0])) and math.isnan(auroc([1.0], []))


def _line_volume():
    """A 1 x 1 x 20 volume: clean foreground z = 8..11, the noisy label dilated by 2 (z = 6..13)."""
    clean = np.zeros((1, 1, 20), np.int64)
    clean[..., 8:12] = 1
    noisy = np.zeros_like(clean)
    noisy[..., 6:14] = 1
    return clean, noisy


def test_boundary_band_distances():
    clean, _ = _line_volume()
    # distance to the other class: z = 5 -> 3, 6 -> 2, 7 -> 1 | 8 -> 1, 9 -> 2, 10 -> 2, 11 -> 1 | 12 -> 1, ... 14 -> 3
    assert np.flatnonzero(boundary_band(clean, 3)[0, 0]).tolist() == list(range(5, 15))
    assert np.flatnonzero(boundary_band(clean, 1)[0, 0]).tolist() == [7, 8, 11, 12]
    assert boundary_band(np.zeros((2, 2, 2)), 1).all()  # no boundary: every voxel


def test_noise_localisation_on_a_hand_built_volume():
    clean, noisy = _line_volume()
    u = np.full(clean.shape, 1.0)  # outside the band: ignored (would pull the AUROC down if counted)
    u[0, 0, [6, 7, 12, 13]] = [0.6, 0.5, 0.5, 0.1]  # the corrupted voxels of the band (z = 5..14)
    u[0, 0, [5, 8, 9, 10, 11, 14]] = [0.2, 0.5, 0.0, 0.0, 0.3, 0.0]  # the correctly labelled ones
    teacher = clean.copy()
    teacher[0, 0, 13] = 1  # the teacher agrees with the noisy label on one corrupted voxel
    got = noise_localisation(u, teacher, noisy, clean, band=3)
    # pairs: 0.6 beats 6; 0.5 beats 5 and ties 1 (twice); 0.1 beats 3 -> (6 + 5.5 + 5.5 + 3) / 24
    assert got["auroc"] == pytest.approx(20 / 24)
    assert got["alpha_corrupted"] == pytest.approx(np.exp(-np.array([0.6, 0.5, 0.5, 0.1])).mean())
    assert got["alpha_correct"] == pytest.approx(np.exp(-np.array([0.2, 0.5, 0.0, 0.0, 0.3, 0.0])).mean())
    assert got["teacher_disagrees"] == pytest.approx(0.75)
    assert (got["n_corrupted"], got["n_correct"]) == (4, 6)
    # with normalised entropy (2 classes) alpha = exp(-u / log 2)
    scaled = noise_localisation(u, teacher, noisy, clean, band=3, entropy_scale=math.log(2))
    assert scaled["alpha_corrupted"] == pytest.approx(np.exp(-np.array([0.6, 0.5, 0.5, 0.1]) / math.log(2)).mean())
    summary = summarize_diagnostics([got, {**got, "auroc": 0.5}])
    assert summary["auroc"] == pytest.approx((20 / 24 + 0.5) / 2) and summary["auroc_min"] == 0.5
    with pytest.raises(ValueError, match="one shape"):
        noise_localisation(u[..., :5], teacher, noisy, clean)


def test_teacher_maps_on_one_window_are_the_training_passes():
    cfg = config_from_dict({"method": "pint", "seed": 3, "model": {"n_filters": 2},
                            "data": {"crop_size": [32, 32, 32]}})
    torch.manual_seed(0)
    method = build_method(cfg, torch.device("cpu"))
    image = torch.randn(1, 32, 32, 32)
    torch.manual_seed(11)  # teacher dropout draws from the global generator
    prob, u = teacher_maps(method, image, seed=7)
    torch.manual_seed(11)
    gen = torch.Generator().manual_seed(7)
    teacher = method.ema.teacher
    teacher.train()  # teacher_batchnorm "batch", as in training
    ref_prob, ref_u = perturbed_teacher_uncertainty(
        teacher, image[None], lambda m: torch.randn(image[None].shape, generator=gen), passes=4, noise_std=0.1,
        noise_clip=0.2, dropout=True)
    teacher.eval()
    np.testing.assert_allclose(prob, ref_prob[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(u, ref_u[0].numpy(), atol=1e-6)
    assert prob.shape == (2, 32, 32, 32) and not teacher.training
