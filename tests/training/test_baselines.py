"""Baselines: the voxel selection rules against hand computations, and a few real training steps of each method."""
import math

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyseg_noise.data import corrupt_dataset, generate_synthetic_dataset
from pyseg_noise.training.baselines import (
    Coteaching,
    CoteachingOptions,
    Decoupling,
    DecouplingOptions,
    MetaReweight,
    PickAndLearn,
    PickAndLearnOptions,
    ReweightOptions,
    TriNetwork,
    clean_meta_cases,
    coteaching_loss,
    decoupling_loss,
    keep_rate,
    label_noise_rate,
    masked_cross_entropy,
    meta_voxel_weights,
    quality_weights,
    small_loss_mask,
    trinetwork_masks,
    weighted_image_loss,
)
from pyseg_noise.training.config import ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig
from pyseg_noise.training.method import Batch
from pyseg_noise.training.registry import _METHODS

SIZE = (16, 16, 16)


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- helpers
def make_config(method, options, root=None, **data):
    return TrainConfig(
        method=method,
        iterations=4,
        batch_size=2,
        seed=0,
        data=DataConfig(root=root, crop_size=SIZE, **data),
        model=ModelConfig(n_filters=2, dropout=False),
        optim=OptimConfig(lr=0.05, momentum=0.0, weight_decay=0.0, lr_policy="constant"),
        method_options=options,
    )


def make_method(cls, options, root=None, **data):
    config = make_config(cls.name, options, root, **data)
    cls.validate_config(config)
    torch.manual_seed(0)
    method = cls(config)
    method.build()
    return method


def tiny_batch(seed=0, b=2):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, 1, *SIZE, generator=g)
    # a blob label plus flipped voxels, so the nets see structure and noise
    xs = torch.arange(SIZE[0]).float()
    r = ((xs[:, None, None] - 8) ** 2 + (xs[None, :, None] - 8) ** 2 + (xs[None, None, :] - 8) ** 2).sqrt()
    label = (r < 5).long().expand(b, *SIZE).clone()
    flip = torch.rand(b, *SIZE, generator=g) < 0.1
    label[flip] = 1 - label[flip]
    image = image + 2.0 * (r < 5).float()
    return Batch(image=image, label=label, cases=[f"c{i}" for i in range(b)], positions=list(range(b)), seed=0)


def run_steps(method, steps=3):
    """What the Trainer does per iteration: train_step, backward, SGD step. Returns the logs."""
    params = [p for g in method.param_groups() for p in g["params"]]
    opt = torch.optim.SGD(params, lr=0.05)
    before = [p.detach().clone() for p in params]
    logs = []
    method.train()
    for t in range(steps):
        out = method.train_step(tiny_batch(t), t)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        logs.append({k: float(v.detach()) for k, v in out.items()})
    changed = [not torch.equal(a, p.detach()) for a, p in zip(before, params)]
    return logs, changed


# ----------------------------------------------------------------------------- shared selection rules
def test_keep_rate_schedule():
    assert [keep_rate(t, 0.3, 4) for t in (0, 1, 2, 4, 100)] == pytest.approx([1.0, 0.925, 0.85, 0.7, 0.7])
    with pytest.raises(ValueError, match="forget_rate"):
        keep_rate(0, 1.5, 4)
    with pytest.raises(ValueError, match="num_gradual"):
        keep_rate(0, 0.1, 0)


def test_small_loss_mask_counts_and_order():
    torch.manual_seed(0)
    loss = torch.rand(2, 5, 7)
    for rate in (0.0, 0.13, 0.5, 1.0):
        mask = small_loss_mask(loss, rate)
        k = max(math.floor(rate * loss.numel()), 1 if rate > 0 else 0)
        assert int(mask.sum()) == k
        if 0 < k < loss.numel():
            assert loss[mask].max() < loss[~mask].min()
    # candidates: only among them, share of their count
    among = loss > 0.5
    mask = small_loss_mask(loss, 0.5, among=among)
    assert not (mask & ~among).any()
    assert int(mask.sum()) == math.floor(0.5 * int(among.sum()))
    assert loss[mask].max() <= loss[among & ~mask].min()
    # ties: exactly k voxels, the first positions win
    assert small_loss_mask(torch.zeros(1, 4), 0.5).tolist() == [[True, True, False, False]]


def test_masked_cross_entropy_hand_values_and_gradient_support():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5))
    mask = torch.rand(2, 4, 5) < 0.4
    ce = F.cross_entropy(logits, target, reduction="none")
    sel = masked_cross_entropy(logits, target, mask)
    torch.testing.assert_close(sel, ce[mask].sum() / mask.sum())
    torch.testing.assert_close(masked_cross_entropy(logits, target, mask, normalize="all"), ce[mask].sum() / ce.numel())
    (g,) = torch.autograd.grad(sel, logits)
    assert torch.equal(g.abs().sum(1) > 0, mask)
    assert float(masked_cross_entropy(logits, target, torch.zeros_like(mask)).detach()) == 0.0
    with pytest.raises(ValueError, match="normalize"):
        masked_cross_entropy(logits, target, mask, normalize="median")


# ----------------------------------------------------------------------------- decoupling
def test_decoupling_updates_exactly_where_the_networks_disagree():
    torch.manual_seed(2)
    a = torch.randn(2, 3, 6, 5, requires_grad=True)
    b = torch.randn(2, 3, 6, 5, requires_grad=True)
    y = torch.randint(0, 3, (2, 6, 5))
    loss, mask = decoupling_loss(a, b, y, normalize="selected")
    disagree = a.argmax(1) != b.argmax(1)
    assert torch.equal(mask, disagree)
    ce_a = F.cross_entropy(a, y, reduction="none")
    ce_b = F.cross_entropy(b, y, reduction="none")
    torch.testing.assert_close(loss, (ce_a[disagree].sum() + ce_b[disagree].sum()) / disagree.sum())
    # the default, as TSMAN describes the method: the disagreement voxels' losses over all voxels
    torch.testing.assert_close(decoupling_loss(a, b, y)[0], (ce_a[disagree].sum() + ce_b[disagree].sum()) / y.numel())
    assert DecouplingOptions().normalize == "all" and DecouplingOptions().warmup_fraction == 0.0
    ga, gb = torch.autograd.grad(loss, (a, b))
    assert torch.equal(ga.abs().sum(1) > 0, disagree) and torch.equal(gb.abs().sum(1) > 0, disagree)


def test_decoupling_over_all_voxels_is_tsman_loss_without_smoothing():
    from pyseg_noise.ops import tsman_loss

    torch.manual_seed(8)
    a, b = torch.randn(2, 3, 5, 6, 4), torch.randn(2, 3, 5, 6, 4)
    y = torch.randint(0, 3, (2, 5, 6, 4))
    torch.testing.assert_close(decoupling_loss(a, b, y, normalize="all")[0], tsman_loss(a, b, y, kernel_size=1))


def test_decoupling_method_trains_and_logs_the_disagreement():
    method = make_method(Decoupling, DecouplingOptions())
    batch = tiny_batch(0)
    method.train()
    out = method.train_step(batch, 0)
    with torch.no_grad():  # no dropout: the same forward again
        a, b = (net(batch.image) for net in method.nets)
    assert float(out["update_fraction"]) == pytest.approx(float((a.argmax(1) != b.argmax(1)).float().mean()))
    assert 0 < float(out["update_fraction"]) < 1
    logs, changed = run_steps(method)
    assert all(math.isfinite(l["loss"]) and l["loss"] > 0 for l in logs)
    assert any(changed)
    probs = method.predict(batch.image)
    with torch.no_grad():
        method.eval()
        expected = (torch.softmax(method.nets[0](batch.image), 1) + torch.softmax(method.nets[1](batch.image), 1)) / 2
    torch.testing.assert_close(method.predict(batch.image), expected)
    assert probs.shape == (2, 2, *SIZE)


def test_decoupling_warmup_uses_every_voxel():
    method = make_method(Decoupling, DecouplingOptions(warmup_fraction=0.5))  # 4 iterations -> 2 of plain CE
    method.train()
    assert float(method.train_step(tiny_batch(0), 1)["update_fraction"]) == 1.0
    assert float(method.train_step(tiny_batch(0), 2)["update_fraction"]) < 1.0


# ----------------------------------------------------------------------------- co-teaching / tri-network
def test_coteaching_keeps_the_smallest_losses_and_exchanges_them():
    torch.manual_seed(3)
    a = torch.randn(2, 2, 6, 7, requires_grad=True)
    b = torch.randn(2, 2, 6, 7, requires_grad=True)
    y = torch.randint(0, 2, (2, 6, 7))
    rate = 0.7
    loss, sel_a, sel_b = coteaching_loss(a, b, y, rate)
    n = y.numel()
    ce_a = F.cross_entropy(a, y, reduction="none").detach()
    ce_b = F.cross_entropy(b, y, reduction="none").detach()
    for sel, ce in ((sel_a, ce_a), (sel_b, ce_b)):
        assert int(sel.sum()) == math.floor(rate * n)
        assert ce[sel].max() <= ce[~sel].min()
    assert not torch.equal(sel_a, sel_b)  # otherwise the exchange test below proves nothing
    torch.testing.assert_close(loss, ce_a[sel_b].mean() + ce_b[sel_a].mean())
    ga, gb = torch.autograd.grad(loss, (a, b))
    assert torch.equal(ga.abs().sum(1) > 0, sel_b)  # a learns from b's picks
    assert torch.equal(gb.abs().sum(1) > 0, sel_a)


def test_trinetwork_trains_each_network_on_its_peers_consensus():
    # hand-built: 1 x 4 voxels, 2 classes; predictions (argmax) per network
    def logits(pred):
        return torch.tensor([[[0.0 if p else 2.0 for p in pred], [2.0 if p else 0.0 for p in pred]]])

    z = [logits([0, 1, 1, 0]), logits([0, 1, 0, 0]), logits([1, 1, 0, 0])]
    y = torch.tensor([[0, 1, 1, 0]])
    masks = trinetwork_masks(z, y, rate=1.0)
    # network 0 learns where 1 and 2 agree: voxels 1, 2, 3
    assert masks[0].tolist() == [[False, True, True, True]]
    assert masks[1].tolist() == [[False, True, False, True]]  # 0 and 2 agree at voxels 1, 3
    assert masks[2].tolist() == [[True, True, False, True]]   # 0 and 1 agree at voxels 0, 1, 3
    # rate 0.5: half of each consensus set, smallest summed peer loss first
    masks = trinetwork_masks(z, y, rate=0.5)
    # for network 0 the peers (1, 2) agree on voxels 1, 2, 3 with summed CE small at 1, 3 (both right), large at 2
    assert masks[0].tolist() == [[False, True, False, False]]
    assert [int(m.sum()) for m in masks] == [1, 1, 1]

    torch.manual_seed(4)
    z = [torch.randn(2, 3, 5, 5) for _ in range(3)]
    y = torch.randint(0, 3, (2, 5, 5))
    for k, m in enumerate(trinetwork_masks(z, y, rate=0.6)):
        i, j = [q for q in range(3) if q != k]
        consensus = z[i].argmax(1) == z[j].argmax(1)
        assert not (m & ~consensus).any()
        assert int(m.sum()) == max(math.floor(0.6 * int(consensus.sum())), 1)


@pytest.mark.parametrize("cls", [Coteaching, TriNetwork])
def test_small_loss_methods_train(cls):
    method = make_method(cls, CoteachingOptions(forget_rate=0.2, num_gradual=2))
    assert len(method.networks()) == cls.num_networks
    logs, changed = run_steps(method, steps=3)
    assert [l["keep_rate"] for l in logs] == pytest.approx([1.0, 0.9, 0.8])
    assert all(math.isfinite(l["loss"]) for l in logs)
    assert any(changed)
    assert method.state_dict() == {"forget_rate": 0.2}


# ----------------------------------------------------------------------------- pick-and-learn
def test_pick_and_learn_weights_and_gradients():
    scores = torch.tensor([0.3, -1.0, 2.0], requires_grad=True)
    w = quality_weights(scores)
    assert (w >= 0).all() and float(w.detach().sum()) == pytest.approx(1.0)
    torch.testing.assert_close(w, torch.exp(scores) / torch.exp(scores).sum())
    torch.manual_seed(5)
    logits = torch.randn(3, 2, 4, 4, 4)
    y = torch.randint(0, 2, (3, 4, 4, 4))
    per_image = F.cross_entropy(logits, y, reduction="none").mean(dim=(1, 2, 3))
    loss = weighted_image_loss(logits, y, w)
    torch.testing.assert_close(loss, (w * per_image).sum())
    # equal scores: the plain mean loss
    torch.testing.assert_close(weighted_image_loss(logits, y, quality_weights(torch.zeros(3))),
                               F.cross_entropy(logits, y))
    # dL/ds_i = w_i (L_i - L): the QAM lowers the weight of above-average losses
    (g,) = torch.autograd.grad(loss, scores)
    torch.testing.assert_close(g, (w * (per_image - loss)).detach())


def test_pick_and_learn_method_trains_both_networks():
    method = make_method(PickAndLearn, PickAndLearnOptions(qam_widths=[4, 4]))
    assert set(method.networks()) == {"model", "qam"}
    logs, changed = run_steps(method)
    assert all(math.isfinite(l["loss"]) for l in logs)
    n_seg = len(list(method.model.parameters()))
    assert any(changed[:n_seg]) and any(changed[n_seg:])
    assert all(0 < l["weight_min"] <= 0.5 <= l["weight_max"] < 1 for l in logs)


# ----------------------------------------------------------------------------- meta re-weighting
def test_meta_weights_equal_the_gradient_alignment_on_a_linear_model():
    # a 1x1x1 convolution is a per-voxel linear classifier: the weight of voxel v is
    # max(lr * grad L_clean . grad l_v, 0) normalised (first-order identity of the virtual step)
    torch.manual_seed(6)
    model = nn.Conv3d(2, 2, 1)
    x = torch.randn(1, 2, 2, 2, 2)
    y = torch.randint(0, 2, (1, 2, 2, 2))
    xc = torch.randn(2, 2, 2, 2, 2)
    yc = torch.randint(0, 2, (2, 2, 2, 2))
    lr = 0.1
    weights, ce, _ = meta_voxel_weights(model, x, y, xc, yc, lr)
    params = list(model.parameters())
    g_clean = torch.autograd.grad(F.cross_entropy(model(xc), yc), params)
    ce_ref = F.cross_entropy(model(x), y, reduction="none")
    raw = torch.zeros_like(ce_ref)
    for idx in np.ndindex(*ce_ref.shape):
        g_v = torch.autograd.grad(ce_ref[idx], params, retain_graph=True)
        raw[idx] = lr * sum((a * b).sum() for a, b in zip(g_clean, g_v))
    expected = raw.clamp_min(0) / raw.clamp_min(0).sum()
    assert (raw > 0).any() and (raw < 0).any()  # both signs occur: the clamp is exercised
    torch.testing.assert_close(weights, expected.detach(), atol=1e-6, rtol=1e-5)
    assert (weights >= 0).all() and float(weights.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(ce, ce_ref)
    with pytest.raises(ValueError, match="lr"):
        meta_voxel_weights(model, x, y, xc, yc, 0.0)


def test_meta_weights_keep_batchnorm_statistics_of_the_real_pass_only():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv3d(1, 3, 1), nn.BatchNorm3d(3), nn.Conv3d(3, 2, 1)).train()
    x, y = torch.randn(2, 1, 3, 3, 3), torch.randint(0, 2, (2, 3, 3, 3))
    reference = nn.Sequential(nn.Conv3d(1, 3, 1), nn.BatchNorm3d(3), nn.Conv3d(3, 2, 1)).train()
    reference.load_state_dict(model.state_dict())
    meta_voxel_weights(model, x, y, torch.randn(2, 1, 3, 3, 3) * 5, torch.randint(0, 2, (2, 3, 3, 3)), 0.1)
    reference(x)  # one ordinary forward pass
    torch.testing.assert_close(model[1].running_mean, reference[1].running_mean)
    assert int(model[1].num_batches_tracked) == 1


# ----------------------------------------------------------------------------- on a tiny synthetic dataset
@pytest.fixture(scope="module")
def noisy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synla") / "data"
    generate_synthetic_dataset(root, n_train=4, n_test=1, shape=SIZE, seed=0)
    corrupt_dataset(root, 0.5, seed=0, radius_range=(1, 2))
    return root


def test_label_noise_rate_counts_flipped_voxels(noisy_root):
    flipped = total = 0
    for case in (noisy_root / "train.list").read_text().split():
        with h5py.File(noisy_root / case / "mri_norm2.h5") as f:
            flipped += int((f["label"][()] != f["label_noisy"][()]).sum())
            total += f["label"].size
    rate = label_noise_rate(noisy_root, "noisy")
    assert rate == pytest.approx(flipped / total) and rate > 0
    assert label_noise_rate(noisy_root, None) == 0.0
    # tau from the data when forget_rate is null
    method = make_method(Coteaching, CoteachingOptions(), root=str(noisy_root), noisy_labels="noisy")
    assert method.forget_rate == pytest.approx(rate)


def test_reweight_method_on_clean_cases_of_the_manifest(noisy_root):
    config = make_config("reweight", ReweightOptions(meta_num_cases=2), str(noisy_root), noisy_labels="noisy")
    import json

    records = json.loads((noisy_root / "label_noisy_manifest.json").read_text())["cases"]
    clean = [r["case"] for r in records if not r["noisy"]]
    assert clean_meta_cases(config, 2) == sorted(clean)[:2]
    method = make_method(MetaReweight, ReweightOptions(meta_num_cases=2), str(noisy_root), noisy_labels="noisy")
    image, label = method.meta_batch(3, 2, "cpu")
    image2, label2 = method.meta_batch(3, 2, "cpu")
    assert torch.equal(image, image2) and torch.equal(label, label2)  # a pure function of the iteration
    logs, changed = run_steps(method)
    assert all(math.isfinite(l["loss"]) for l in logs)
    assert all(0 < l["weighted_fraction"] < 1 for l in logs)
    assert any(changed)


def test_config_errors_name_the_option():
    with pytest.raises(ConfigError, match="backbone"):
        Decoupling.validate_config(make_config("decoupling", DecouplingOptions(backbone="unet")))
    with pytest.raises(ConfigError, match="crop_size"):
        cfg = make_config("coteaching", CoteachingOptions())
        cfg.data.crop_size = (16, 16, 20)
        Coteaching.validate_config(cfg)
    with pytest.raises(ConfigError, match="forget_rate"):
        Coteaching.validate_config(make_config("coteaching", CoteachingOptions(forget_rate=1.5)))
    with pytest.raises(ConfigError, match="data.root"):
        make_method(Coteaching, CoteachingOptions()).forget_rate


def test_registered_names():
    assert {"decoupling", "coteaching", "trinet", "pickandlearn", "reweight"} <= set(_METHODS)


def test_override_folders_as_reproduce_writes_them(noisy_root, tmp_path):
    # reproduce's layout: every case as <case>.h5 (dataset "label") + manifest.json with noise records
    import json

    records = json.loads((noisy_root / "label_noisy_manifest.json").read_text())["cases"]
    folder = tmp_path / "labels"
    folder.mkdir()
    for r in records:
        with h5py.File(noisy_root / r["case"] / "mri_norm2.h5") as f, h5py.File(folder / f"{r['case']}.h5", "w") as g:
            g.create_dataset("label", data=f["label_noisy"][()])
    assert label_noise_rate(noisy_root, label_overrides=str(folder)) == pytest.approx(label_noise_rate(noisy_root, "noisy"))
    config = make_config("reweight", ReweightOptions(), str(noisy_root), label_overrides=str(folder))
    for key in ("records", "cases"):  # reproduce's manifest, and corrupt_dataset's spelling
        (folder / "manifest.json").write_text(json.dumps({key: records}))
        assert clean_meta_cases(config, 4) == sorted(r["case"] for r in records if not r["noisy"])
    # without a manifest, overridden cases are not trusted
    (folder / "manifest.json").unlink()
    with pytest.raises(ConfigError, match="meta_cases"):
        clean_meta_cases(config, 4)


def test_a_loaded_method_keeps_its_tau_without_the_data():
    method = make_method(Coteaching, CoteachingOptions())  # forget_rate null, no data.root
    method.load_state_dict({"forget_rate": 0.25})
    assert method.forget_rate == 0.25 and method.rate(1000) == pytest.approx(0.75)
