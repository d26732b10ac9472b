"""TSMAN training: the loss against the reference, the attention switches, and training steps."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from pyseg_noise.models import DenseVoxNet
from pyseg_noise.ops import reference
from pyseg_noise.training.config import ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig
from pyseg_noise.training.method import Batch
from pyseg_noise.training.registry import _METHODS
from pyseg_noise.training.tsman import (PAPER_STAGE1_FRACTION, TSMANMethod, TSMANOptions, tsman_departures,
                                        tsman_pair_loss, tsman_training_loss)

SIZE = (16, 16, 16)
# stage1_fraction=0: these unit tests look at stage 2 (the attended network) from the first iteration
TINY = dict(stem_channels=4, growth_rate=2, n_layers=[1, 1], up_channels=[4, 4], dropout_rate=0.0, stage1_fraction=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_method(iterations=3, lr_policy="constant", **options):
    config = TrainConfig(
        method="tsman", iterations=iterations, batch_size=2,
        data=DataConfig(crop_size=SIZE), model=ModelConfig(n_filters=2, dropout=False),
        optim=OptimConfig(lr=0.05, momentum=0.0, weight_decay=0.0, lr_policy=lr_policy),
        method_options=TSMANOptions(**{**TINY, **options}),
    )
    TSMANMethod.validate_config(config)
    torch.manual_seed(0)
    method = TSMANMethod(config)
    method.build()
    return method


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    label = (torch.rand(2, *SIZE, generator=g) < 0.3).long()
    image = torch.randn(2, 1, *SIZE, generator=g) + label[:, None].float()
    return Batch(image=image, label=label, cases=["a", "b"], positions=[0, 1], seed=0)


def test_pair_loss_is_the_tsman_loss_and_plain_ce_without_f4():
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 6, 5, 4, dtype=torch.float64), torch.randn(2, 3, 6, 5, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (2, 6, 5, 4))
    loss, att = tsman_pair_loss(a, b, y)
    ref_loss, ref_att = reference.tsman_loss(a, b, y)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(att, ref_att)
    # by hand: mean_v att_v ce_v for each stream, one shared map
    ce_a, ce_b = F.cross_entropy(a, y, reduction="none"), F.cross_entropy(b, y, reduction="none")
    torch.testing.assert_close(loss, (ref_att * ce_a).mean() + (ref_att * ce_b).mean())
    plain, none = tsman_pair_loss(a, b, y, loss_attention=False)
    assert none is None
    torch.testing.assert_close(plain, (ce_a.mean() + ce_b.mean()).float())


def test_aux_heads_get_plain_deep_supervision_and_attended_is_an_option():
    torch.manual_seed(1)
    a, b, xa, xb = (torch.randn(1, 2, 5, 5, 3) for _ in range(4))
    y = torch.randint(0, 2, (1, 5, 5, 3))
    main, _ = reference.tsman_loss(a, b, y)
    # default: the paper gates only the final loss; the aux heads keep DenseVoxNet's plain CE
    loss, logs = tsman_training_loss((a, b, xa, xb), y, aux_weight=0.4)
    plain_aux = F.cross_entropy(xa, y) + F.cross_entropy(xb, y)
    torch.testing.assert_close(loss, main + 0.4 * plain_aux)
    torch.testing.assert_close(logs["loss_aux"], plain_aux)
    # opt-in: the aux pair's own attention map
    loss, logs = tsman_training_loss((a, b, xa, xb), y, aux_weight=0.4, aux_loss="attended")
    aux, _ = reference.tsman_loss(xa, xb, y)
    assert float(aux) < float(plain_aux)  # the gate removes most voxels: the two forms differ
    torch.testing.assert_close(loss, main + 0.4 * aux)
    torch.testing.assert_close(logs["loss_aux"], aux)
    assert float(logs["fg_label"]) == pytest.approx(float((y > 0).float().mean()))
    with pytest.raises(ValueError, match="aux_loss"):
        tsman_training_loss((a, b, xa, xb), y, aux_loss="gated")
    assert float(logs["disagreement"]) == pytest.approx(float((a.argmax(1) != b.argmax(1)).float().mean()))
    loss, logs = tsman_training_loss((a, b, None, None), y)
    torch.testing.assert_close(loss, main)
    assert "loss_aux" not in logs


def test_all_attentions_off_equals_two_independent_ce_trained_streams():
    method = make_method(attention_points=[], loss_attention=False)
    assert len(method.model.attention) == 0
    # two stand-alone DenseVoxNets with the streams' initial weights, trained with CE + aux CE
    nets = [copy.deepcopy(method.model.stream_a), copy.deepcopy(method.model.stream_b)]
    w = method.aux_weight
    assert w == pytest.approx(0.33)
    opt_t = torch.optim.SGD(method.model.parameters(), lr=0.05)
    opts = [torch.optim.SGD(n.parameters(), lr=0.05) for n in nets]
    method.train()
    for t in range(3):
        bt = batch(t)
        opt_t.zero_grad()
        method.train_step(bt, t)["loss"].backward()
        opt_t.step()
        for net, opt in zip(nets, opts):
            net.train()
            main, aux = net(bt.image)
            opt.zero_grad()
            (F.cross_entropy(main, bt.label) + w * F.cross_entropy(aux, bt.label)).backward()
            opt.step()
    for stream, net in ((method.model.stream_a, nets[0]), (method.model.stream_b, nets[1])):
        for (name, p), q in zip(stream.state_dict().items(), net.state_dict().values()):
            torch.testing.assert_close(p, q, msg=name)
    # and the weights did move
    assert not torch.equal(method.model.stream_a.classifier.weight, make_method().model.stream_a.classifier.weight)


def test_tsman_trains_with_every_attention():
    method = make_method()
    assert sorted(method.model.attention) == ["f1", "f2", "f3"]
    opt = torch.optim.SGD(method.model.parameters(), lr=0.05)
    before = {n: p.detach().clone() for n, p in method.model.named_parameters()}
    method.train()
    for t in range(2):
        out = method.train_step(batch(t), t)
        assert math.isfinite(float(out["loss"].detach()))
        assert 0.0 <= float(out["attention_mean"]) <= 1.0
        assert {"loss_main", "loss_aux", "disagreement"} <= set(out)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    moved = [n for n, p in method.model.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("attention.f1") for n in moved) and any(n.startswith("attention.f3") for n in moved)
    assert any(n.startswith("stream_a.") for n in moved) and any(n.startswith("stream_b.") for n in moved)
    method.eval()
    x = batch(9).image
    with torch.no_grad():
        a, b = method.model(x)
        expected = (torch.softmax(a, 1) + torch.softmax(b, 1)) / 2
        torch.testing.assert_close(method.predict(x), expected)
        torch.testing.assert_close(method.uncertainty(x), (a.argmax(1) != b.argmax(1)).float())


@pytest.mark.parametrize("points", [["f3"], ["f2", "f3"], ["f1"]])
def test_attention_points_build_exactly_the_table_2_rows(points):
    method = make_method(attention_points=points)
    assert sorted(method.model.attention) == sorted(points)
    out = method.train_step(batch(0), 0)  # a network without f1 runs: the point passes through
    assert math.isfinite(float(out["loss"].detach()))


def test_warmup_trains_with_plain_ce_first():
    method = make_method(warmup_fraction=0.5)  # 3 iterations -> f4 from iteration 2 (round(1.5) = 2)
    assert method.warmup_iterations == 2
    method.train()
    b = batch(0)
    plain = method.train_step(b, 1)
    assert "attention_mean" not in plain
    a, bb, xa, xb = method.model(b.image)
    expected = sum(F.cross_entropy(z, b.label) for z in (a, bb)) + method.aux_weight * sum(
        F.cross_entropy(z, b.label) for z in (xa, xb))
    torch.testing.assert_close(plain["loss"], expected)
    assert "attention_mean" in method.train_step(b, 2)


def test_vnet_subnet_has_no_aux_loss():
    method = make_method(subnet="vnet")
    assert method.aux_weight == 0.0
    out = method.train_step(batch(0), 0)
    assert "loss_aux" not in out


@pytest.mark.parametrize("change,match", [
    (dict(attention_points=["f4"]), "attention_points"),
    (dict(kernel_size=4), "kernel_size"),
    (dict(sigma2=0.0), "sigma2"),
    (dict(subnet="unet"), "subnet"),
    (dict(n_layers=[1]), "n_layers"),
    (dict(stage1_fraction=1.0), "stage1_fraction"),
    (dict(aux_loss="gated"), "aux_loss"),
    (dict(stage_switch="early"), "stage_switch"),
    (dict(switch_min_disagreement=0.0), "switch_min_disagreement"),
    (dict(switch_fg_factor=0.5), "switch_fg_factor"),
    (dict(warmup_fraction=0.2, stage1_fraction=0.3), "stage1_fraction"),
    (dict(init_streams=["a"]), "init_streams"),
    (dict(init_streams=["runs/a", "runs/../runs/a"]), "two different runs"),
])
def test_bad_options_name_the_key(change, match):
    config = TrainConfig(method="tsman", data=DataConfig(crop_size=SIZE), method_options=TSMANOptions(**change))
    with pytest.raises(ConfigError, match=match):
        TSMANMethod.validate_config(config)


def test_crop_must_fit_the_subnet():
    config = TrainConfig(method="tsman", data=DataConfig(crop_size=(16, 16, 18)), method_options=TSMANOptions())
    with pytest.raises(ConfigError, match="multiples of 4"):
        TSMANMethod.validate_config(config)


def test_registered():
    assert _METHODS["tsman"] is TSMANMethod
    assert isinstance(make_method().model.stream_a, DenseVoxNet)


# ----------------------------------------------------------------------------- self-training end to end
def test_self_training_writes_pseudo_labels_a_dataset_reads(tmp_path):
    import json

    import h5py
    import numpy as np

    from pyseg_noise.data import LAH5Dataset, generate_synthetic_dataset
    from pyseg_noise.training.config import config_from_dict
    from pyseg_noise.training.distill import distill_dataset
    from pyseg_noise.training.run_data import label_override_paths
    from pyseg_noise.training.self_training import SelfTrainingConfig, run_self_training, split_cases
    from pyseg_noise.training.trainer import load_trained

    info = generate_synthetic_dataset(tmp_path / "data", n_train=4, n_test=1, shape=SIZE, seed=0)
    config = config_from_dict({
        "method": "tsman", "iterations": 2, "batch_size": 2, "device": "cpu", "amp": "off", "progress": False,
        "plots": False, "log_every": 1, "val_stride": [8, 8, 8],
        "data": {"root": str(info["root"]), "crop_size": [16, 16, 16]},
        "optim": {"lr": 0.01},
        "method_options": {k: v for k, v in TINY.items()},
    })
    settings = SelfTrainingConfig(labelled_fraction=0.5, base_iterations=[1, 2], distillation="hd")
    result = run_self_training(config, tmp_path / "st", settings)

    labelled, unlabelled = split_cases(info["train"], 0.5, 0)
    assert (result.labelled, result.unlabelled) == (labelled, unlabelled) and len(unlabelled) == 2
    # the base models saw only the labelled cases
    for t, run in enumerate(result.base_runs):
        cfg = json.loads(json.dumps(__import__("yaml").safe_load((run / "config.yaml").read_text())))
        assert cfg["iterations"] == [1, 2][t] and cfg["seed"] == t
        # plain-CE DenseVoxNets (the paper's "Baseline"), with the streams' sizes
        assert cfg["method"] == "densevoxnet"
        assert {k: cfg["method_options"][k] for k in ("stem_channels", "growth_rate", "n_layers")} == {
            k: TINY[k] for k in ("stem_channels", "growth_rate", "n_layers")}
        assert (tmp_path / "st" / "labelled_data" / "train.list").read_text().split() == labelled
    # the pseudo labels are the HD of the two base models, and a dataset reads them as overrides
    models = [load_trained(r, "cpu") for r in result.base_runs]
    expected = distill_dataset(models, info["root"], unlabelled, method="hd", patch_size=(16, 16, 16),
                               stride=(8, 8, 8))
    paths = label_override_paths(str(tmp_path / "st" / "pseudo_labels"))
    assert sorted(paths) == sorted(unlabelled)
    ds = LAH5Dataset(info["root"], "train", label_paths=paths, crop_size=None, augment=False)
    for i, case in enumerate(ds.cases):
        if case in unlabelled:
            np.testing.assert_array_equal(ds[i]["label"].numpy(), expected[case])
    assert set(result.pseudo_dice) == set(unlabelled) and all(0 <= v <= 1 for v in result.pseudo_dice.values())
    # the final run trained on them, and validated
    final_cfg = __import__("yaml").safe_load((tmp_path / "st" / "final" / "config.yaml").read_text())
    assert final_cfg["data"]["label_overrides"] == str(tmp_path / "st" / "pseudo_labels")
    # TSMAN fine-tuned base models 0 and 1: its streams were loaded from them before the first iteration
    assert final_cfg["method_options"]["init_streams"] == [str(r) for r in result.base_runs]
    from pyseg_noise.training import load_checkpoint
    assert load_checkpoint(tmp_path / "st" / "final")["method_state"]["streams_loaded"] is True
    assert json.loads((tmp_path / "st" / "self_training.json").read_text())["init_streams"] == [
        str(r) for r in result.base_runs]
    assert result.final.iteration == 2 and "dice" in result.final.summary
    # the `distill hd` command gives the same labels from the same runs
    from pyseg_noise.cli import main

    assert main(["distill", "hd", "--runs", *map(str, result.base_runs), "--data", str(info["root"]), "--cases",
                 *unlabelled, "--out", str(tmp_path / "cli"), "--device", "cpu", "--stride", "8", "8", "8"]) == 0
    cli_paths = label_override_paths(str(tmp_path / "cli"))
    for case in unlabelled:
        with h5py.File(cli_paths[case]) as f:
            np.testing.assert_array_equal(f["label"][()], expected[case])
    # a second call reuses everything (finished runs, existing pseudo labels)
    again = run_self_training(config, tmp_path / "st", settings)
    assert again.pseudo_labels == result.pseudo_labels and again.final.iteration == 2


@pytest.mark.parametrize("layout", ["h5", "nifti"])
def test_labelled_subset_is_a_dataset_of_its_own(tmp_path, layout):
    from pyseg_noise.data import generate_synthetic_dataset, open_dataset
    from pyseg_noise.training.self_training import make_case_subset, split_cases

    info = generate_synthetic_dataset(tmp_path / "data", n_train=4, n_test=1, shape=SIZE, layout=layout, seed=0)
    labelled, unlabelled = split_cases(info["train"], 0.25, 3)
    assert len(labelled) == 1 and sorted(labelled + unlabelled) == sorted(info["train"])
    sub = make_case_subset(info["root"], labelled, tmp_path / "sub", layout=layout)
    train = open_dataset(sub, "train", crop_size=None, augment=False)
    test = open_dataset(sub, "test", crop_size=None, augment=False)
    full = open_dataset(info["root"], "train", crop_size=None, augment=False)
    assert train.cases == labelled and test.cases == info["test"]
    import numpy as np

    np.testing.assert_array_equal(train[0]["image"].numpy(), full[full.cases.index(labelled[0])]["image"].numpy())
    make_case_subset(info["root"], labelled, tmp_path / "sub", layout=layout)  # idempotent
    with pytest.raises(ConfigError, match="at least 2"):
        split_cases(["only"], 0.5, 0)


# ----------------------------------------------------------------------------- the two stages
def test_stage1_length_defaults_to_the_papers_proportion():
    # base models of 15,000 iterations (mean of 10k/15k/20k) before TSMAN's 35,000
    assert PAPER_STAGE1_FRACTION == pytest.approx(0.3)
    method = make_method(iterations=10, stage1_fraction=None)
    assert method.stage1_iterations == 3 and [method.stage_at(t) for t in (0, 2, 3, 9)] == [1, 1, 2, 2]
    assert make_method(iterations=10, stage1_fraction=0.5).stage1_iterations == 5
    assert make_method(iterations=10, stage1_fraction=None, init_streams=["A", "B"]).stage1_iterations == 0
    # the opt-in warm-up replaces stage 1
    warm = make_method(iterations=10, stage1_fraction=None, warmup_fraction=0.2)
    assert warm.stage1_iterations == 0 and warm.warmup_iterations == 2


def test_stage1_trains_two_independent_ce_streams_and_stage2_the_attended_network():
    method = make_method(iterations=4, stage1_fraction=0.5)
    nets = [copy.deepcopy(method.model.stream_a), copy.deepcopy(method.model.stream_b)]
    method.train()
    b = batch(0)
    out = method.train_step(b, 0)
    assert float(out["stage"]) == 1.0 and "attention_mean" not in out
    # the loss is that of two stand-alone DenseVoxNets (no mutual attention between them)
    expected = 0.0
    for net in nets:
        net.train()
        main, aux = net(b.image)
        expected = expected + F.cross_entropy(main, b.label) + method.aux_weight * F.cross_entropy(aux, b.label)
    torch.testing.assert_close(out["loss"].detach(), expected.detach())
    out["loss"].backward()
    # the SA/CA modules get no gradient in stage 1: the optimizer leaves them at their initialisation
    assert all(p.grad is None for p in method.model.attention.parameters())
    assert all(p.grad is not None for p in method.model.stream_a.parameters())
    method.model.zero_grad(set_to_none=True)
    out = method.train_step(b, 2)
    assert float(out["stage"]) == 2.0 and 0.0 <= float(out["attention_mean"]) <= 1.0
    out["loss"].backward()
    assert all(p.grad is not None for p in method.model.attention.parameters())
    # stage 2's attended loss is not stage 1's plain CE
    assert float(out["loss"].detach()) < float(expected.detach())


def test_learning_rate_restarts_at_stage_2():
    method = make_method(iterations=10, stage1_fraction=0.4, lr_policy="poly")
    lrs = [method.lr_at(t) for t in range(10)]
    assert lrs[0] == pytest.approx(0.05) and lrs[4] == pytest.approx(0.05)
    assert lrs[3] == pytest.approx(0.05 * (1 - 3 / 4) ** 0.9)  # stage 1: poly over its 4 iterations
    assert lrs[9] == pytest.approx(0.05 * (1 - 5 / 6) ** 0.9)  # stage 2: poly over the other 6
    plain = make_method(iterations=10, stage1_fraction=0.0, lr_policy="poly")
    assert plain.lr_at(4) == pytest.approx(0.05 * (1 - 4 / 10) ** 0.9)


def test_criterion_switch_ends_stage1_and_is_kept_in_the_checkpoint_state():
    method = make_method(iterations=10, stage1_fraction=0.5, stage_switch="criterion")
    logs = lambda d, a, b, y: {k: torch.tensor(v) for k, v in
                               zip(("disagreement", "fg_pred_a", "fg_pred_b", "fg_label"), (d, a, b, y))}
    assert method._criterion_met(logs(0.02, 0.10, 0.15, 0.08))
    assert not method._criterion_met(logs(0.005, 0.10, 0.15, 0.08))  # streams agree (almost) everywhere
    assert not method._criterion_met(logs(0.02, 0.03, 0.15, 0.08))  # one stream predicts too little foreground
    assert not method._criterion_met(logs(0.02, 0.10, 0.17, 0.08))  # ... or too much
    assert not method._criterion_met(logs(0.02, 0.0, 0.0, 0.0))
    method.train()
    method._criterion_met = lambda _logs: True
    assert float(method.train_step(batch(0), 1)["stage"]) == 1.0
    assert method.switched_at == 2 and method.stage_at(2) == 2 and method.lr_at(2) == pytest.approx(0.05)
    state = method.state_dict()
    fresh = make_method(iterations=10, stage1_fraction=0.5, stage_switch="criterion")
    assert fresh.stage_at(2) == 1
    fresh.load_state_dict(state)
    assert fresh.stage_at(2) == 2 and float(fresh.train_step(batch(0), 2)["stage"]) == 2.0
    # a checkpoint of another stage plan is refused
    other = make_method(iterations=10, stage1_fraction=0.1)
    with pytest.raises(ValueError, match="stage 2 starts"):
        other.load_state_dict(state)
    other.load_state_dict({})  # a checkpoint from before the stages: nothing to restore


def test_departures_are_named():
    assert tsman_departures(TSMANOptions()) == []
    lines = tsman_departures(TSMANOptions(warmup_fraction=0.2, stage_switch="criterion", aux_loss="attended"))
    assert len(lines) == 3
    assert "warmup_fraction" in lines[0] and "20%" in lines[0]
    assert "stage_switch" in lines[1] and "aux_loss" in lines[2]


def _densevoxnet_run(root, out, seed, **sizes):
    from pyseg_noise.training import Trainer

    from .tiny_runs import tiny_config

    options = {k: v for k, v in TINY.items() if k != "stage1_fraction"}
    cfg = tiny_config(root, "densevoxnet", method_options={**options, **sizes}, iterations=2, seed=seed,
                      data={"noisy_labels": None})
    Trainer(cfg, out, validate=False).fit()
    return out


@pytest.mark.slow  # end-to-end training (the fast tier leaves it out)
def test_init_streams_start_stage_2_from_two_different_ce_runs(tiny_h5, tmp_path):
    from pyseg_noise.training import load_checkpoint

    runs = [_densevoxnet_run(tiny_h5, tmp_path / f"base_{s}", s) for s in (0, 1)]
    method = make_method(iterations=3, stage1_fraction=None, init_streams=[str(r) for r in runs])
    fresh_attention = copy.deepcopy(method.model.attention.state_dict())
    method.train()
    out = method.train_step(batch(0), 0)
    assert float(out["stage"]) == 2.0 and "attention_mean" in out  # fine-tuning from the first iteration
    for stream, run in ((method.model.stream_a, runs[0]), (method.model.stream_b, runs[1])):
        saved = load_checkpoint(run)["networks"]["model"]
        for name, value in stream.named_parameters():  # (the forward pass has moved the BN statistics)
            assert torch.equal(value, saved[name]), name
    assert not torch.equal(method.model.stream_a.classifier.weight, method.model.stream_b.classifier.weight)
    for name, value in method.model.attention.state_dict().items():
        assert torch.equal(value, fresh_attention[name]), name  # the SA/CA modules start fresh
    assert method.state_dict()["streams_loaded"] is True
    # a run of other sizes does not fit, and the message names the key
    wide = _densevoxnet_run(tiny_h5, tmp_path / "wide", 2, growth_rate=3)
    bad = make_method(iterations=3, init_streams=[str(runs[0]), str(wide)])
    with pytest.raises(ConfigError, match="init_streams"):
        bad.train_step(batch(0), 0)
    missing = make_method(iterations=3, init_streams=[str(runs[0]), str(tmp_path / "nowhere")])
    with pytest.raises(ConfigError, match="init_streams"):
        missing.train_step(batch(0), 0)


@pytest.mark.slow  # resumed and uninterrupted training runs (the fast tier leaves it out)
def test_resume_across_the_stage_boundary_equals_an_uninterrupted_run(tiny_h5, tmp_path, monkeypatch):
    import signal

    from pyseg_noise.training import Trainer, TrainingInterrupted, load_checkpoint

    from .tiny_runs import tiny_config

    cfg = tiny_config(tiny_h5, "tsman", method_options={**TINY, "stage1_fraction": 0.5}, iterations=6,
                      checkpoint_every=100, data={"noisy_labels": None}, optim={"lr_policy": "poly", "lr": 0.05})
    Trainer(cfg, tmp_path / "straight", validate=False).fit()
    original = TSMANMethod.after_step

    def interrupt(self, iteration):
        original(self, iteration)
        if iteration == 1:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(TSMANMethod, "after_step", interrupt)
    with pytest.raises(TrainingInterrupted):
        Trainer(cfg, tmp_path / "resumed", validate=False).fit()
    stopped = load_checkpoint(tmp_path / "resumed")
    assert stopped["iteration"] == 2 and stopped["method_state"]["stage2_start"] == 3
    monkeypatch.setattr(TSMANMethod, "after_step", original)
    Trainer(cfg, tmp_path / "resumed", resume=True, validate=False).fit()
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed")
    assert a["iteration"] == b["iteration"] == 6
    for name, value in a["networks"]["model"].items():
        assert torch.equal(value, b["networks"]["model"][name]), name
    assert a["method_state"] == b["method_state"]
