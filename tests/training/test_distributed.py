"""torchrun with 2 CPU processes (gloo) x batch 2 == 1 process x batch 4, for V-Net and PINT.

What makes the two runs comparable: each process takes its half of the same
global batch (the data stream), PINT's input noise is keyed per sample, the
gradients are averaged, and batch norm computes its statistics over the global
batch (``sync_batchnorm``; plain DDP batch norm would normalise each half by its
own statistics and give a different, equally valid, model). Dropout masks come
from each process's own generator, so the comparison switches dropout off;
with dropout on the runs agree in distribution only. Float sums are taken in a
different order, so the weights agree to rounding (allclose), not bitwise.
"""
import subprocess
import textwrap

import pytest
import torch

from pyseg_noise.training import Trainer, load_checkpoint

from .tiny_runs import PYTHON, REPO, subprocess_env, tiny_config


pytestmark = pytest.mark.usefixtures("one_thread")


def _configs(root):
    # fp32 teacher passes: bf16's rounding (~4e-3) depends on the batch split and would be compared here
    common = dict(batch_size=4, checkpoint_every=100, model={"n_filters": 2, "dropout": False}, teacher_amp="off")
    return {
        "vnet": tiny_config(root, "vnet", iterations=2, **common),
        # plots on: rank 0 alone runs the teacher for the uncertainty panel (no collective may hang)
        "pint": tiny_config(root, "pint", iterations=1, plots=True, **common,
                            method_options={"teacher_dropout": False, "image_phase_iterations": 1}),
    }


def _float64_gradients(image, label, rank=0, world=1):
    """Gradients of the V-Net CE loss (float64) for this process's share of a fixed batch of 4, averaged."""
    from pyseg_noise.models import VNet
    from pyseg_noise.training.distributed import average_gradients
    from pyseg_noise.training.sync_batchnorm import convert_batchnorm

    torch.manual_seed(0)
    net = VNet(1, 2, 2, has_dropout=False).double()
    if world > 1:
        convert_batchnorm(net, torch.device("cpu"))
    share = slice(rank * 4 // world, (rank + 1) * 4 // world)
    loss = torch.nn.functional.cross_entropy(net(image[share]), label[share])
    loss.backward()
    params = list(net.parameters())
    average_gradients(params)
    return {n: p.grad.clone() for n, p in net.named_parameters()}, {n: b.clone() for n, b in net.named_buffers()}


def _fixed_batch():
    g = torch.Generator().manual_seed(11)
    label = (torch.rand(4, 32, 32, 16, generator=g) < 0.3).long()
    image = torch.randn(4, 1, 32, 32, 16, generator=g, dtype=torch.float64) + label[:, None]
    return image, label


_WORKER = """
import sys, torch
torch.set_num_threads(1)
import torch.distributed as dist
from pyseg_noise.training import Trainer
from tests.training.test_distributed import _configs, _fixed_batch, _float64_gradients
root, out = sys.argv[1], sys.argv[2]
for name, cfg in _configs(root).items():
    Trainer(cfg, f"{out}/{name}").fit()
# the machinery alone, in float64: global batch norm + gradient averaging
if not dist.is_initialized():
    dist.init_process_group("gloo")
grads, buffers = _float64_gradients(*_fixed_batch(), rank=dist.get_rank(), world=dist.get_world_size())
if dist.get_rank() == 0:
    torch.save({"grads": grads, "buffers": buffers}, f"{out}/float64.pt")
"""


@pytest.mark.slow  # end-to-end training (the fast tier leaves it out)
def test_two_processes_equal_one_process_with_the_global_batch(tiny_h5, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(_WORKER))
    cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(tiny_h5), str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=subprocess_env(), cwd=str(REPO), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # exactness of the machinery: float64 gradients and batch-norm statistics agree to rounding
    ddp = torch.load(tmp_path / "ddp" / "float64.pt", weights_only=True)
    grads, buffers = _float64_gradients(*_fixed_batch())
    for n, g in grads.items():
        torch.testing.assert_close(ddp["grads"][n], g, rtol=1e-9, atol=1e-12, msg=lambda m: f"grad {n}: {m}")
    for n, b in buffers.items():
        torch.testing.assert_close(ddp["buffers"][n], b, rtol=1e-9, atol=1e-12, msg=lambda m: f"buffer {n}: {m}")

    # whole runs (float32): the same to rounding after a few steps (the tiny net is ill-conditioned
    # enough that float32 rounding grows over many steps, as it does between thread counts)
    for name, cfg in _configs(tiny_h5).items():
        single = Trainer(cfg, tmp_path / "single" / name).fit()
        a = load_checkpoint(tmp_path / "ddp" / name)
        b = load_checkpoint(tmp_path / "single" / name)
        assert a["world_size"] == 2 and b["world_size"] == 1
        assert a["iteration"] == b["iteration"] == single.total_iterations
        assert len(a["rng"]) == 2  # one generator state per process
        for net in a["networks"]:
            _assert_close_normwise(a["networks"][net], b["networks"][net], f"{name} {net}")
        if name == "pint":
            teacher_a = a["method_state"]["ema"]["teacher"]
            teacher_b = b["method_state"]["ema"]["teacher"]
            _assert_close_normwise(teacher_a, teacher_b, f"{name} teacher")
        # the momentum buffers are the last gradients: float32 rounding in batch norm's backward
        # (differences of near-equal sums) leaves them ~3e-3 apart; a wrong split is O(1) apart
        momentum = [{i: s["momentum_buffer"] for i, s in opt["optimizer"]["state"].items()} for opt in (a, b)]
        _assert_close_normwise(*momentum, f"{name} momentum", rel=2e-2)


def _assert_close_normwise(a, b, what, rel=1e-4):
    """Whole state ``a`` equals ``b`` to ``||a - b|| <= rel * ||b||`` over all float tensors together.

    Integer buffers must be equal. Per-element or per-tensor tolerances flake here:
    float32 sums in another order differ by ~1e-6 after two steps, which is O(1) of
    the update of a batch-norm bias whose true gradient nearly cancels. Over the
    whole network that rounding is ~1e-6 of the norm, while a wrong data split or
    reduction changes the update itself (~1e-2 of the norm) and still fails.
    """
    diff, ref = 0.0, 0.0
    for key in b:
        x, y = a[key], b[key]
        if not y.is_floating_point():
            assert torch.equal(x, y), f"{what}.{key}"
            continue
        diff += (x.double() - y.double()).pow(2).sum().item()
        ref += y.double().pow(2).sum().item()
    diff, ref = diff ** 0.5, ref ** 0.5
    assert diff <= rel * ref, f"{what}: |a-b| = {diff:.3g} > {rel:g} * |b| = {rel * ref:.3g}"


def test_plain_batch_norm_is_not_the_global_batch():
    """Why sync_batchnorm exists: per-process statistics differ from the global batch's."""
    image, label = _fixed_batch()
    torch.manual_seed(0)
    from pyseg_noise.models import VNet

    net = VNet(1, 2, 2, has_dropout=False).double()
    whole = net(image)
    halves = torch.cat([net(image[:2]), net(image[2:])])
    assert (whole - halves).abs().max() > 1e-3


_BUFFERS_WORKER = """
import sys, torch
import torch.distributed as dist
from torch import nn
from pyseg_noise.training.distributed import broadcast_buffers
dist.init_process_group("gloo")
rank = dist.get_rank()
net = nn.Sequential(nn.Conv3d(1, 3, 1), nn.BatchNorm3d(3), nn.BatchNorm3d(3))
with torch.no_grad():
    for i, b in enumerate(net.buffers()):
        b.fill_(10 * rank + i)          # running stats and num_batches_tracked (int64), per rank
    for p in net.parameters():
        p.fill_(rank + 0.5)
calls = []
original = dist.broadcast
dist.broadcast = lambda t, src=0, **kw: (calls.append(t.dtype), original(t, src=src, **kw))[1]
broadcast_buffers([net])
torch.save({"buffers": [b.clone() for b in net.buffers()], "params": [p.detach().clone() for p in net.parameters()],
            "calls": [str(c) for c in calls]}, f"{sys.argv[1]}/rank{rank}.pt")
"""


def test_broadcast_buffers_copies_rank0_buffers_in_one_collective_per_dtype(tmp_path):
    """sync_batchnorm off: rank 0's batch-norm buffers everywhere, parameters untouched, bucketed."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(_BUFFERS_WORKER))
    cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=subprocess_env(), cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert len(r0["buffers"]) == 6  # 2 x (running_mean, running_var, num_batches_tracked)
    for i, (a, b) in enumerate(zip(r0["buffers"], r1["buffers"])):
        assert torch.equal(a, b), f"buffer {i}"
        assert torch.all(a == i), f"buffer {i} is not rank 0's"
    assert all(torch.all(p == 1.5) for p in r1["params"])  # rank 1 keeps its own parameters
    assert sorted(r1["calls"]) == ["torch.float32", "torch.int64"]  # one collective per dtype
