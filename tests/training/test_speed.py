"""The speed settings: their resolution, the teacher passes in reduced precision, channels_last,
the heap cache, the step-part timer and the loop's host reads only at the logging cadence."""
from __future__ import annotations

import torch
import pytest

from pyseg_noise.models import VNet, DenseVoxNet
from pyseg_noise.training import Trainer
from pyseg_noise.training import speed as speed_mod
from pyseg_noise.training.config import ConfigError, config_from_dict
from pyseg_noise.training.pint import perturbed_teacher_uncertainty
from pyseg_noise.training.speed import SpeedPlan, heap_cache, resolve_speed
from pyseg_noise.training.step_parts import part, record_parts
from pyseg_noise.training.trainer import NonFiniteLossError, _LossWatch

from .tiny_runs import tiny_config

CPU = torch.device("cpu")


def _plan(**values):
    return resolve_speed(config_from_dict(values), CPU)


def test_auto_resolves_bf16_teacher_only_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(speed_mod, "cpu_has_fast_bf16", lambda: True)
    plan = _plan()
    assert plan.teacher_dtype == torch.bfloat16 and plan.student_dtype is None
    assert plan.channels_last and not plan.compile
    monkeypatch.setattr(speed_mod, "cpu_has_fast_bf16", lambda: False)
    assert _plan().teacher_dtype is None
    assert _plan(teacher_amp="bf16").teacher_dtype == torch.bfloat16  # asked for: used
    assert _plan(teacher_amp="off").teacher_dtype is None
    assert _plan(teacher_amp="fp16").teacher_dtype is None  # fp16 autocast is CUDA only
    assert _plan(amp="bf16").student_dtype == torch.bfloat16  # opt-in student bf16 on the CPU
    assert _plan(amp="auto").student_dtype is None


def test_the_plan_is_reported_with_its_reasons(monkeypatch):
    monkeypatch.setattr(speed_mod, "cpu_has_fast_bf16", lambda: True)
    plan = _plan()
    d = plan.as_dict()
    assert d["teacher_dtype"] == "bf16" and d["student_dtype"] == "fp32" and d["channels_last"] is True
    assert "teacher passes bf16" in plan.describe() and "AVX512-BF16" in plan.describe()


@pytest.mark.parametrize("key,value", [("teacher_amp", "int8"), ("channels_last", "maybe"), ("compile", "max"),
                                       ("cpu_allocator", "jemalloc")])
def test_bad_settings_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        config_from_dict({key: value})


def test_yaml_on_off_booleans_are_read_as_the_words():
    cfg = config_from_dict({"amp": False, "channels_last": True, "compile": False})
    assert (cfg.amp, cfg.channels_last, cfg.compile) == ("off", "on", "off")


def _conv3(net):
    """A 3^3 convolution with several input channels (its weight's layout tells the format apart)."""
    return next(m.weight for m in net.modules() if isinstance(m, torch.nn.Conv3d) and m.in_channels > 1
                and m.kernel_size == (3, 3, 3))


def test_channels_last_goes_to_the_networks_that_gain_from_it():
    plan = _plan(channels_last="auto")
    vnet, dvn = VNet(1, 2, 2), DenseVoxNet(1, 2, stem_channels=4, growth_rate=2, n_layers=(1, 1), up_channels=(4, 4))
    plan.apply([vnet, dvn])
    assert _conv3(vnet).is_contiguous(memory_format=torch.channels_last_3d)
    assert not _conv3(dvn).is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.randn(1, 1, 16, 16, 16)
    assert plan.prepare_input(x, [vnet]).is_contiguous(memory_format=torch.channels_last_3d)
    assert plan.prepare_input(x, [dvn]).is_contiguous()
    dvn2 = DenseVoxNet(1, 2, stem_channels=4, growth_rate=2, n_layers=(1, 1), up_channels=(4, 4))
    _plan(channels_last="on").apply([dvn2])
    assert _conv3(dvn2).is_contiguous(memory_format=torch.channels_last_3d)
    vnet3 = VNet(1, 2, 2)
    _plan(channels_last="off").apply([vnet3])
    assert _conv3(vnet3).is_contiguous() and not _conv3(vnet3).is_contiguous(memory_format=torch.channels_last_3d)


def test_channels_last_network_gives_the_same_logits():
    torch.manual_seed(0)
    net = VNet(1, 2, 4).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    ref = net(x)
    _plan(channels_last="on").apply([net])
    out = net(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def _teacher_run(plan):
    torch.manual_seed(0)
    teacher = VNet(1, 2, 4).train()
    image = torch.randn(2, 1, 32, 32, 16)
    gens = {}

    def noise(m):
        g = gens.setdefault(m, torch.Generator().manual_seed(m))
        return torch.randn(image.shape, generator=g)

    torch.manual_seed(1)
    return perturbed_teacher_uncertainty(teacher, image, noise, passes=4, noise_std=0.1, noise_clip=0.2,
                                         dropout=False, speed=plan)


def test_bf16_teacher_passes_match_fp32_to_bf16_rounding():
    prob32, u32 = _teacher_run(SpeedPlan(device="cpu"))
    prob16, u16 = _teacher_run(SpeedPlan(device="cpu", teacher_dtype=torch.bfloat16))
    assert prob16.dtype == torch.float32 and u16.dtype == torch.float32  # accumulated in fp32
    assert not prob16.is_inference()  # usable by a loss that saves it for backward
    assert (prob16 - prob32).abs().mean() < 0.01 and (prob16 - prob32).abs().max() < 0.1  # bf16: 8-bit mantissa
    assert (prob16 - prob32).abs().max() > 0  # it did run in bf16
    torch.testing.assert_close(prob16.sum(1), torch.ones_like(prob16[:, 0]), rtol=1e-5, atol=1e-5)
    # the soft pseudo label from inference mode trains a student
    student = VNet(1, 2, 4)
    from pyseg_noise.ops import pint_pixel_loss
    logits = student(torch.randn(2, 1, 32, 32, 16))
    pint_pixel_loss(logits, torch.zeros(2, 32, 32, 16, dtype=torch.long), prob16).backward()
    assert student.out_conv.weight.grad is not None


def test_heap_cache_sets_and_restores_glibc_settings(monkeypatch):
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

        def malloc_trim(self, pad):
            calls.append(("trim", pad))
            return 1

    monkeypatch.setattr(speed_mod, "_glibc", lambda: FakeLibc())
    with heap_cache(True) as on:
        assert on
        assert calls == [(-4, 0), (-1, 2**31 - 1)]
    assert calls[2:] == [(-4, 65536), (-3, 32 * 2**20), (-1, 64 * 2**20), ("trim", 0)]
    calls.clear()
    with heap_cache(False) as on:
        assert not on
    assert calls == []
    monkeypatch.setattr(speed_mod, "_glibc", lambda: None)
    with heap_cache(True) as on:
        assert not on
    assert _plan().heap_cache is False  # no glibc: reported off


def test_heap_cache_on_this_machine_allocates_and_frees():
    with heap_cache(True):
        for _ in range(3):
            x = torch.ones(8 * 2**20 // 4)  # 8 MiB: above the mmap threshold
            assert float(x.sum()) == x.numel()
            del x


def test_step_parts_records_only_while_active():
    with part("loose"):
        pass
    with record_parts() as seconds:
        with part("a"):
            sum(range(10000))
        with part("a"):
            pass
    assert set(seconds) == {"a"} and seconds["a"] > 0
    with pytest.raises(RuntimeError, match="already active"):
        with record_parts():
            with record_parts():
                pass


def test_loss_watch_without_per_step_reads_names_the_first_bad_iteration():
    watch = _LossWatch(CPU, distributed=True, method="pint", run_dir=None)  # the GPU / multi-process path
    assert not watch.observe(torch.tensor(1.0), 1)
    assert not watch.observe(torch.tensor(float("nan")), 2)  # recorded on the device, not read
    assert not watch.observe(torch.tensor(float("inf")), 3)
    with pytest.raises(NonFiniteLossError, match="at iteration 2 of 10 .*found after iteration 3"):
        watch.sync(False, 3, 10)
    ok = _LossWatch(CPU, distributed=True, method="pint", run_dir=None)
    ok.observe(torch.tensor(2.0), 1)
    assert ok.sync(True, 1, 10) is True and ok.sync(False, 1, 10) is False
    eager = _LossWatch(CPU, distributed=False, method="pint", run_dir=None)
    assert eager.observe(torch.tensor(float("nan")), 4)
    assert "non-finite loss (nan) at iteration 4 of 9" in str(eager.error(4, 9, before_update=True))


def test_the_loop_reads_step_scalars_only_at_the_logging_cadence(tiny_h5, tmp_path, monkeypatch):
    reads, syncs = [], []
    original_scalars, original_sync = Trainer._step_scalars, _LossWatch.sync

    def counted_scalars(out, device):
        reads.append(1)
        return original_scalars(out, device)

    def counted_sync(self, flag, it, total):
        syncs.append(it)
        return original_sync(self, flag, it, total)

    monkeypatch.setattr(Trainer, "_step_scalars", staticmethod(counted_scalars))
    monkeypatch.setattr(_LossWatch, "sync", counted_sync)
    cfg = tiny_config(tiny_h5, "vnet", iterations=10, log_every=4, checkpoint_every=100)
    Trainer(cfg, tmp_path / "run", validate=False).fit()
    assert len(reads) == 4  # iterations 1, 4, 8 and 10
    assert syncs == [1, 4, 8, 10, 10]  # the same, and before the final checkpoint


@pytest.mark.slow  # compiles two V-Nets (~1 min on 2 cores)
def test_compiled_networks_recompile_nothing_after_the_first_step(tiny_h5):
    """compile: on — the student, the teacher's passes (inference mode, bf16) and the EMA update
    compile once; later steps (a changing EMA decay, new batches and noise) reuse the graphs."""
    from torch._dynamo.utils import counters

    from pyseg_noise.training.method import Batch
    from pyseg_noise.training.trainer import _build_optimizer, build_method, run_step

    torch._dynamo.reset()
    cfg = tiny_config(tiny_h5, "pnt", iterations=6, compile="on", deterministic=False)
    method = build_method(cfg, CPU)
    optimizer = _build_optimizer(cfg, method.param_groups())
    params = [p for g in optimizer.param_groups for p in g["params"]]
    watch = _LossWatch(CPU, False, "pnt", None)
    crop = tuple(cfg.data.crop_size)

    def step(t):
        g = torch.Generator().manual_seed(t)
        batch = Batch(image=method.speed.prepare_input(torch.randn((2, 1) + crop, generator=g), method.modules()),
                      label=(torch.rand((2,) + crop, generator=g) < 0.3).long(), cases=["a", "b"],
                      positions=[2 * t, 2 * t + 1], seed=0)
        return run_step(method, optimizer, None, None, params, batch, t, watch, 6)

    for t in range(2):
        step(t)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 2  # the student's and the teacher's
    for t in range(2, 5):
        assert torch.isfinite(step(t)["loss"])
    assert counters["stats"]["unique_graphs"] == graphs
