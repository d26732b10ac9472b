"""Checkpoints: resume == uninterrupted, a kill during a write leaves the last one, Ctrl-C saves, NaN stops."""
import os
import signal
import subprocess
import time

import pytest
import torch

from pyseg_noise.training import NonFiniteLossError, Trainer, TrainingInterrupted, load_checkpoint
from pyseg_noise.training.pint import PINT
from pyseg_noise.training.run_log import read_log
from pyseg_noise.training.vnet import PlainVNet

from .tiny_runs import PYTHON, subprocess_env, tiny_config


# slow tier (interrupted, killed and resumed training runs): `python -m pytest -q tests -m "not slow"` leaves it out
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def _assert_same_state(a, b):
    """Networks, extra state (teacher), optimizer and RNG of two checkpoints are bitwise equal."""
    assert a["iteration"] == b["iteration"]

    def walk(x, y, where):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), where
        elif isinstance(x, dict):
            assert x.keys() == y.keys(), where
            for k in x:
                walk(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, (list, tuple)):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{where}[{i}]")
        else:
            assert x == y, where

    for key in ("networks", "method_state", "optimizer", "rng", "scheduler", "sampler"):
        walk(a[key], b[key], key)


def test_resume_after_ctrl_c_equals_an_uninterrupted_run(tiny_h5, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_h5, "pint", method_options={"image_phase_iterations": 2}, checkpoint_every=100)
    Trainer(cfg, tmp_path / "straight").fit()

    original = PINT.after_step

    def interrupt_at_2(self, iteration):
        original(self, iteration)
        if iteration == 2:
            signal.raise_signal(signal.SIGINT)  # as a user's Ctrl-C during iteration 3

    monkeypatch.setattr(PINT, "after_step", interrupt_at_2)
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(cfg, tmp_path / "resumed").fit()
    assert info.value.iteration == 3
    assert load_checkpoint(tmp_path / "resumed")["iteration"] == 3  # saved although checkpoint_every is 100
    monkeypatch.setattr(PINT, "after_step", original)

    result = Trainer(cfg, tmp_path / "resumed", resume=True).fit()
    assert result.iteration == 6
    _assert_same_state(load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed"))
    logged = [r["iteration"] for r in read_log(tmp_path / "resumed") if "split" not in r]
    assert logged == [1, 2, 3, 4, 5, 6]
    assert result.summary["dice"] == pytest.approx(
        Trainer(cfg, tmp_path / "straight", resume=True).fit().summary["dice"])


def test_resume_refuses_other_settings_and_fresh_run_refuses_existing_folder(tiny_h5, tmp_path):
    from pyseg_noise.training import ConfigError

    cfg = tiny_config(tiny_h5, "vnet", iterations=2)
    Trainer(cfg, tmp_path / "run").fit()
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(cfg, tmp_path / "run").fit()
    with pytest.raises(ConfigError, match="settings differ from the checkpoint's in optim.lr"):
        Trainer(tiny_config(tiny_h5, "vnet", iterations=2, optim={"lr": 0.5}), tmp_path / "run", resume=True).fit()
    with pytest.raises(ConfigError, match="nothing to resume"):
        Trainer(cfg, tmp_path / "other", resume=True).fit()


_KILLED_WRITER = """
import io, os, signal, sys, torch
torch.set_num_threads(1)
from pyseg_noise.training import checkpoint, Trainer
from tests.training.tiny_runs import tiny_config
calls = []
real = checkpoint._serialize
def dying(obj, f):
    calls.append(1)
    if len(calls) == 2:  # the second checkpoint: write half of it, then die as if killed
        buf = io.BytesIO(); torch.save(obj, buf); data = buf.getvalue()
        f.write(data[: len(data) // 2]); f.flush(); os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    real(obj, f)
checkpoint._serialize = dying
Trainer(tiny_config(sys.argv[1], "vnet", iterations=6, checkpoint_every=2), sys.argv[2]).fit()
"""


def test_kill_during_a_checkpoint_write_leaves_the_previous_one(tiny_h5, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([PYTHON, "-c", _KILLED_WRITER, str(tiny_h5), str(run)], env=subprocess_env(),
                          cwd=str(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    torn = list((run / "checkpoints").glob(".last.pt.*.tmp"))
    assert len(torn) == 1 and torn[0].stat().st_size > 0  # the half-written file is there...
    state = load_checkpoint(run)  # ...but last.pt is the complete previous checkpoint
    assert state["iteration"] == 2
    cfg = tiny_config(tiny_h5, "vnet", iterations=6, checkpoint_every=2)
    assert Trainer(cfg, run, resume=True).fit().iteration == 6
    assert not list((run / "checkpoints").glob("*.tmp"))
    Trainer(cfg, tmp_path / "straight").fit()
    _assert_same_state(load_checkpoint(tmp_path / "straight"), load_checkpoint(run))


def test_sigint_to_a_training_process_saves_a_checkpoint(tiny_h5, tmp_path):
    run = tmp_path / "run"
    cmd = [PYTHON, "-m", "pyseg_noise", "train", "vnet", "--data", str(tiny_h5), "--out", str(run),
           "--iterations", "5000", "--batch-size", "2", "--no-progress", "--checkpoint-every", "10000",
           "--set", "data.crop_size=[32,32,16]", "--set", "model.n_filters=2", "--set", "log_every=1"]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(read_log(run)) < 3:
            time.sleep(0.2)
        assert len(read_log(run)) >= 3, "training did not start"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    state = load_checkpoint(run)
    assert 3 <= state["iteration"] < 5000 and not state["finished"]
    assert f"interrupted after iteration {state['iteration']}" in err and "--resume" in err


def test_a_non_finite_loss_stops_naming_the_iteration(tiny_h5, tmp_path, monkeypatch):
    original = PlainVNet.train_step

    def nan_at_3(self, batch, iteration):
        out = original(self, batch, iteration)
        if iteration == 2:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(PlainVNet, "train_step", nan_at_3)
    cfg = tiny_config(tiny_h5, "vnet", iterations=5, checkpoint_every=1)
    with pytest.raises(NonFiniteLossError) as info:
        Trainer(cfg, tmp_path / "run").fit()
    message = str(info.value)
    assert "non-finite loss (nan) at iteration 3 of 5" in message
    assert "the last checkpoint holds iteration 2" in message
    assert load_checkpoint(tmp_path / "run")["iteration"] == 2
