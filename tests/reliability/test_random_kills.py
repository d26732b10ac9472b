"""SIGKILL at seeded random moments, then resume: the same result as a run never interrupted.

A helper process imports torch once and forks one training child per round (it runs
no torch computation itself, so forking is safe and each round costs no import). Each
of 6 rounds kills its child at a moment drawn from a seeded generator (every kind
at least once, in a random order):

* ``timer``  -- the helper SIGKILLs the child after a random delay (setup, an iteration
  or a checkpoint write, wherever it happens to be);
* ``step``   -- inside the k-th training step of the child, after the forward pass;
* ``write``  -- during the k-th checkpoint write, after a random share of its bytes;
* ``rename`` -- after the k-th checkpoint's temporary file is complete and fsync'ed,
  just before it is renamed over ``last.pt``.

After every round the checkpoint folder is copied aside; the test checks that each copy
loads, that the iteration never goes back, and that the run resumed to the end equals an
uninterrupted run bitwise (networks, optimizer, random states) with a complete log.
"""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from pyseg_noise.training import Trainer, load_checkpoint
from pyseg_noise.training.run_log import read_log

from ..training.tiny_runs import PYTHON, REPO, make_tiny_dataset, subprocess_env, tiny_config

ITERATIONS = 60  # long enough that no timer round (<= 0.6 s) can outlast the whole run
CHECKPOINT_EVERY = 2

_HELPER = r"""
import io, json, os, random, shutil, signal, sys, time
from pathlib import Path
import torch
from pyseg_noise.training import Trainer, checkpoint
from pyseg_noise.training.vnet import PlainVNet
from tests.training.tiny_runs import tiny_config

data, run, snapshots, seed, rounds = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(seed)
# the Trainer's first torch.use_deterministic_algorithms imports torch._inductor (seconds): do it once, here
torch.use_deterministic_algorithms(False)
config = tiny_config(data, "vnet", iterations=%(iterations)d, checkpoint_every=%(every)d)

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def child(kind, k, fraction):
    torch.set_num_threads(1)
    count = {"n": 0}
    if kind == "step":
        real_step = PlainVNet.train_step
        def step(self, batch, iteration):
            out = real_step(self, batch, iteration)
            count["n"] += 1
            if count["n"] == k:
                die()
            return out
        PlainVNet.train_step = step
    elif kind == "write":
        real_serialize = checkpoint._serialize
        def serialize(obj, f):
            count["n"] += 1
            if count["n"] == k:
                buf = io.BytesIO(); torch.save(obj, buf); data = buf.getvalue()
                f.write(data[: int(len(data) * fraction)]); f.flush(); os.fsync(f.fileno())
                die()
            real_serialize(obj, f)
        checkpoint._serialize = serialize
    elif kind == "rename":
        real_replace = os.replace
        def replace(src, dst):
            if str(dst).endswith("last.pt"):
                count["n"] += 1
                if count["n"] == k:
                    die()
            real_replace(src, dst)
        os.replace = replace
    resume = (run / "checkpoints" / "last.pt").is_file()
    Trainer(config, run, resume=resume, overwrite=not resume, validate=False).fit()

# every kind at least once, in a random order, then random kinds
kinds = ["timer", "step", "write", "rename"]
rng.shuffle(kinds)
kinds += [rng.choice(["timer", "step", "write", "rename"]) for _ in range(rounds - len(kinds))]
report = []
for r, kind in enumerate(kinds):
    k = rng.randint(1, 4) if kind == "step" else rng.randint(1, 2)
    fraction = rng.random()
    delay = rng.uniform(0.05, 0.6)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child(kind, k, fraction)
        except BaseException:
            import traceback; traceback.print_exc(); code = 3
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
    if kind == "timer":
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    folder = run / "checkpoints"
    shutil.copytree(folder, snapshots / f"round{r}") if folder.is_dir() else (snapshots / f"round{r}").mkdir()
    report.append({"kind": kind, "k": k, "fraction": round(fraction, 3), "delay": round(delay, 3),
                   "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                   "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None})
print(json.dumps(report))
""" % {"iterations": ITERATIONS, "every": CHECKPOINT_EVERY}


# slow tier (kills and resumes training processes): `python -m pytest -q tests -m "not slow"` leaves it out
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("kills") / "data")


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("kills_straight") / "run"
    Trainer(tiny_config(data, "vnet", iterations=ITERATIONS, checkpoint_every=CHECKPOINT_EVERY), run,
            validate=False).fit()
    return load_checkpoint(run)


def _assert_equal_states(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal_states(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal_states(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_random_kills_then_resume_equal_an_uninterrupted_run(data, straight, tmp_path):
    run, snapshots = tmp_path / "run", tmp_path / "snapshots"
    snapshots.mkdir()
    seed, rounds = 0, 6
    proc = subprocess.run([PYTHON, "-c", _HELPER, str(data), str(run), str(snapshots), str(seed), str(rounds)],
                          env=subprocess_env(), cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report) == rounds
    last_iteration = 0
    for r, entry in enumerate(report):
        # every child either was killed or (a late timer, or nothing left to do) finished cleanly
        assert entry["signal"] == 9 or entry["exit"] == 0, (entry, proc.stderr[-3000:])
        if entry["kind"] != "timer" and entry["exit"] == 0:
            # a deterministic kill point that never came: the child must have reached the end
            assert load_checkpoint(run)["finished"], entry
        snapshot = snapshots / f"round{r}"
        if (snapshot / "last.pt").exists():
            state = load_checkpoint(snapshot / "last.pt")  # never torn, always loadable
            assert state["iteration"] >= last_iteration, (r, entry)
            assert state["iteration"] % CHECKPOINT_EVERY == 0 or state["finished"]
            last_iteration = state["iteration"]
        torn = [p.name for p in snapshot.iterdir() if p.name != "last.pt"]
        assert all(name.startswith(".last.pt.") and name.endswith(".tmp") for name in torn), torn
    assert sum(entry["signal"] == 9 for entry in report) >= 3, report  # the draws did kill
    assert {entry["kind"] for entry in report} == {"timer", "step", "write", "rename"}

    config = tiny_config(data, "vnet", iterations=ITERATIONS, checkpoint_every=CHECKPOINT_EVERY)
    resume = (run / "checkpoints" / "last.pt").exists()
    result = Trainer(config, run, resume=resume, overwrite=not resume, validate=False).fit()
    assert result.iteration == ITERATIONS
    final = load_checkpoint(run)
    for key in ("iteration", "networks", "method_state", "optimizer", "rng", "scheduler", "sampler"):
        _assert_equal_states(final[key], straight[key], key)
    assert [rec["iteration"] for rec in read_log(run) if "split" not in rec] == list(range(1, ITERATIONS + 1))
    assert not [p for p in (run / "checkpoints").iterdir() if p.name != "last.pt"]  # stale temporaries removed
    shutil.rmtree(snapshots)
