"""Config dataclasses: the papers' defaults, YAML round trip, overrides, and clear errors."""
from pathlib import Path

import pytest
import yaml

from pyseg_noise.training import ConfigError, TrainConfig, load_config, method_names, save_config
from pyseg_noise.training.config import config_from_dict, parse_overrides
from pyseg_noise.training.lr_schedule import learning_rate, step_lr
from pyseg_noise.training.pint import PINTOptions

from .tiny_runs import REPO


def test_defaults_are_pint_section_3_1():
    cfg = load_config(None, method="pint")
    assert (cfg.iterations, cfg.batch_size, tuple(cfg.data.crop_size)) == (6000, 4, (112, 112, 80))
    o = cfg.optim
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.lr_policy, o.lr_step, o.lr_gamma) == (
        "sgd", 0.01, 0.9, 1e-4, "step", 2500, 0.1)
    assert (cfg.model.n_filters, cfg.model.dropout, cfg.model.dropout_rate) == (16, True, 0.5)
    p = cfg.method_options
    assert isinstance(p, PINTOptions)
    assert (p.ema_decay, p.passes, p.noise_std, p.noise_clip, p.teacher_dropout, p.pseudo_label) == (
        0.99, 4, 0.1, 0.2, True, "soft")
    assert (p.image_phase_iterations, p.image_phase_lr, p.ce_warmup_iterations) == (2000, 0.01, 0)


def test_pint_schedule_and_lengths():
    from pyseg_noise.training.registry import get_method

    cfg = {m: load_config(None, method=m) for m in ("pnt", "int", "pint", "vnet")}
    methods = {m: get_method(m)(c) for m, c in cfg.items()}
    assert {m: x.total_iterations() for m, x in methods.items()} == {"pnt": 6000, "int": 6000, "pint": 8000,
                                                                     "vnet": 6000}
    pint = methods["pint"]
    lrs = [pint.lr_at(t) for t in (0, 2499, 2500, 4999, 5000, 5999, 6000, 7999)]
    assert lrs == pytest.approx([0.01, 0.01, 0.001, 0.001, 1e-4, 1e-4, 0.01, 0.01])
    assert [pint.phase_at(t) for t in (0, 5999, 6000, 7999)] == ["pixel", "pixel", "image", "image"]
    assert methods["int"].phase_at(0) == "image" and methods["pnt"].phase_at(5999) == "pixel"
    assert [step_lr(0.01, t, 2500, 0.1) for t in (0, 2500)] == pytest.approx([0.01, 0.001])
    poly = load_config(None, ["optim.lr_policy=poly"]).optim
    assert learning_rate(poly, 50, 100) == pytest.approx(0.01 * 0.5 ** 0.9)


def test_yaml_round_trip(tmp_path):
    cfg = load_config(None, ["optim.lr=0.05", "data.crop_size=[64, 64, 48]", "method_options.passes=8"],
                      method="pint", iterations=100)
    path = tmp_path / "c.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert again == cfg
    assert yaml.safe_load(path.read_text())["method_options"]["passes"] == 8
    assert tuple(again.data.crop_size) == (64, 64, 48)


@pytest.mark.parametrize("name", ["pint.yaml", "pnt.yaml", "int.yaml", "vnet.yaml", "pint_cpu.yaml"])
def test_example_configs_load(name):
    cfg = load_config(REPO / "configs" / name)
    assert cfg.method in method_names()


@pytest.mark.parametrize("values, message", [
    ({"method": "nope"}, "unknown method 'nope'; registered methods: "),
    ({"iterations": -5}, "iterations must be a positive integer, got -5"),
    ({"iterations": "ten"}, "iterations: expected an integer, got 'ten'"),
    ({"optim": {"lrr": 0.1}}, "unknown config key optim.lrr"),
    ({"data": {"crop_size": [64, 64]}}, "data.crop_size: expected 3 values"),
    ({"method": "pint", "method_options": {"passes": 0}}, "method_options.passes (M) must be >= 1"),
    ({"method": "pint", "method_options": {"pseudo_label": "fuzzy"}}, "pseudo_label must be soft or hard"),
    ({"data": {"crop_size": [40, 32, 32]}}, "data.crop_size must be multiples of 16"),
    ({"method": "vnet", "method_options": {"passes": 4}}, "unknown config key method_options.passes"),
    ({"amp": "fp8"}, "amp must be auto, off, bf16 or fp16"),
])
def test_bad_values_name_the_key(values, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(values)
    assert message in str(info.value)


def test_unknown_method_lists_registered():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"method": "nope"})
    for name in ("vnet", "pnt", "int", "pint"):
        assert name in str(info.value)


def test_overrides_parse_yaml_values():
    assert parse_overrides(["optim.lr=0.5", "data.crop_size=[1,2,3]", "deterministic=true"]) == {
        "optim": {"lr": 0.5}, "data": {"crop_size": [1, 2, 3]}, "deterministic": True}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["optim.lr"])


def test_missing_yaml_file():
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(Path("/nonexistent/c.yaml"))


def test_to_dict_is_plain():
    d = TrainConfig().to_dict()
    assert d["data"]["crop_size"] == [112, 112, 80] and d["val_stride"] == [18, 18, 4]
