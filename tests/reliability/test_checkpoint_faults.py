"""Checkpoint faults: a full disk keeps the last good checkpoint, corrupt or hostile files are refused.

* A write that fails (ENOSPC while serializing, at fsync or at the rename; a real
  EFBIG from a file-size limit) raises CheckpointWriteError naming the file, leaves
  the previous checkpoint byte for byte and loadable, and no temporary file.
* Empty, truncated, random, foreign, incomplete and mismatched checkpoints, and
  pickles carrying a code-execution payload, are refused by load_checkpoint, by
  Trainer(resume=True), by load_trained and by the command line (one error line,
  exit code 2) -- and the payload never runs.
"""
from __future__ import annotations

import errno
import io
import os
import pickle
import random
import re
import resource
import shutil
import signal
import stat
import warnings

import pytest
import torch

from pyseg_noise.cli import main
from pyseg_noise.training import (CheckpointError, CheckpointWriteError, Trainer, atomic_save, checkpoint,
                                  load_checkpoint, load_trained)
from pyseg_noise.training.checkpoint import checkpoint_path

from ..training.tiny_runs import make_tiny_dataset, tiny_config


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("ckpt_faults") / "data")


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory):
    """A finished 2-iteration V-Net run (no validation) to copy and damage."""
    run = tmp_path_factory.mktemp("ckpt_faults_run") / "run"
    Trainer(tiny_config(data, "vnet", iterations=2), run, validate=False).fit()
    return run


def _config(data, **kw):
    return tiny_config(data, "vnet", **{"iterations": 6, "checkpoint_every": 2, **kw})


def _temporaries(run):
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.name != "last.pt")


# ----------------------------------------------------------------------------- full disk
class _FullDisk(io.RawIOBase):
    """A file whose device fills up after ``room`` bytes: the rest of the write fails with ENOSPC."""

    def __init__(self, f, room):
        self._f = f
        self._room = room

    def writable(self):
        return True

    def write(self, b):
        n = len(b)
        if n > self._room:
            self._f.write(bytes(b[: self._room]))
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= n
        return self._f.write(b)


def _fail_second(kind, monkeypatch):
    """Make the second checkpoint write fail with a full disk at ``kind``."""
    calls = {"n": 0}
    if kind == "serialize":  # torch.save's writes fail half-way: torch wraps the OSError into a RuntimeError
        real = checkpoint._serialize

        def serialize(obj, f):
            calls["n"] += 1
            if calls["n"] == 2:
                return real(obj, _FullDisk(f, room=300_000))
            return real(obj, f)

        monkeypatch.setattr(checkpoint, "_serialize", serialize)
    elif kind == "fsync":  # the data reached the page cache but the device is full at fsync
        real = os.fsync

        def fsync(fd):
            if stat.S_ISREG(os.fstat(fd).st_mode):  # the file, not the folder
                calls["n"] += 1
                if calls["n"] == 2:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    else:  # the rename fails (e.g. EIO on the folder)
        real = os.replace

        def replace(src, dst):
            if str(dst).endswith("last.pt"):
                calls["n"] += 1
                if calls["n"] == 2:
                    raise OSError(errno.EIO, os.strerror(errno.EIO))
            return real(src, dst)

        monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("kind", ["serialize", "fsync", "replace"])
def test_a_failing_checkpoint_write_stops_training_and_keeps_the_last_checkpoint(data, tmp_path, monkeypatch, kind):
    run = tmp_path / "run"
    _fail_second(kind, monkeypatch)
    with pytest.raises(CheckpointWriteError) as info:
        Trainer(_config(data), run, validate=False).fit()
    ckpt = checkpoint_path(run)
    code = "EIO" if kind == "replace" else "ENOSPC"
    message = str(info.value)
    assert info.value.errno == getattr(errno, code)
    assert isinstance(info.value, OSError)  # `except OSError` still catches it
    assert message == (f"training stopped after iteration 4 of 6: cannot write checkpoint {ckpt}: "
                       f"{os.strerror(getattr(errno, code))} ({code}); the previous checkpoint {ckpt} is unchanged; "
                       "last good checkpoint: iteration 2")
    assert _temporaries(run) == []  # the half-written temporary file is gone
    kept = load_checkpoint(run)
    assert kept["iteration"] == 2 and not kept["finished"]
    logged = [line for line in (run / "log.jsonl").read_text().splitlines()
              if '"iteration"' in line and '"split"' not in line]  # training lines (not the speed record)
    assert len(logged) == 4  # training stopped at the failed checkpoint, it did not go on without one

    if kind != "serialize":
        return
    monkeypatch.undo()  # space freed: resume finishes the run exactly as an uninterrupted one
    assert Trainer(_config(data), run, resume=True, validate=False).fit().iteration == 6
    straight = tmp_path / "straight"
    Trainer(_config(data), straight, validate=False).fit()
    a, b = load_checkpoint(run), load_checkpoint(straight)
    for name in a["networks"]:
        for key, value in a["networks"][name].items():
            assert torch.equal(value, b["networks"][name][key]), key


def test_a_full_disk_through_the_command_line_is_one_error_line(data, tmp_path, monkeypatch, capsys):
    _fail_second("serialize", monkeypatch)
    run = tmp_path / "run"
    code = main(["train", "vnet", "--data", str(data), "--out", str(run), "--iterations", "6", "--batch-size", "2",
                 "--checkpoint-every", "2", "--no-progress", "--set", "data.crop_size=[32,32,16]",
                 "--set", "model.n_filters=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"pyseg-noise train: error: training stopped after iteration 4 of 6: cannot write "
                             f"checkpoint {checkpoint_path(run)}: No space left on device (ENOSPC)")
    assert load_checkpoint(run)["iteration"] == 2


def test_a_real_file_size_limit_fails_the_write_and_keeps_the_previous_file(tmp_path):
    """No monkeypatch: the kernel refuses the write (EFBIG under RLIMIT_FSIZE, SIGXFSZ ignored)."""
    path = tmp_path / "checkpoints" / "last.pt"
    atomic_save({"format": 1, "w": torch.ones(10)}, path)
    before = path.read_bytes()
    big = {"format": 1, "w": torch.ones(1 << 20)}  # 4 MiB
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        with pytest.raises(CheckpointWriteError) as info:
            atomic_save(big, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert info.value.errno == errno.EFBIG
    assert str(info.value) == (f"cannot write checkpoint {path}: File too large (EFBIG); the previous checkpoint "
                               f"{path} is unchanged")
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["last.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(10))
    atomic_save(big, path)  # with the limit lifted the same write succeeds
    assert torch.equal(load_bytes(path)["w"], big["w"])


def load_bytes(path):
    return torch.load(path, weights_only=True)


def test_a_failing_first_write_says_there_is_no_earlier_checkpoint(tmp_path, monkeypatch):
    def full(obj, f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "_serialize", full)
    path = tmp_path / "last.pt"
    with pytest.raises(CheckpointWriteError, match=re.escape(f"cannot write checkpoint {path}: No space left on "
                                                             "device (ENOSPC); no earlier checkpoint exists there")):
        atomic_save({"format": 1}, path)
    assert list(tmp_path.iterdir()) == []


def test_errors_that_are_not_the_disk_pass_through_unchanged(tmp_path, monkeypatch):
    """A bug (not an OSError) is not disguised as a disk problem, and Ctrl-C stays a KeyboardInterrupt."""
    for exc in (TypeError("not serializable"), KeyboardInterrupt()):
        def broken(obj, f, exc=exc):
            f.write(b"partial")
            raise exc

        monkeypatch.setattr(checkpoint, "_serialize", broken)
        with pytest.raises(type(exc)):
            atomic_save({"format": 1}, tmp_path / "last.pt")
        assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- corrupt and hostile checkpoints
class _Payload:
    """Unpickling this runs a shell command (the classic pickle attack)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _damage(kind, ckpt, marker):
    """Replace ``ckpt`` by a damaged or hostile file; returns the expected message (a regex after the path)."""
    good = ckpt.read_bytes()
    state = torch.load(ckpt, weights_only=True)
    if kind == "empty":
        ckpt.write_bytes(b"")
        return "the file is empty"
    if kind == "truncated":
        ckpt.write_bytes(good[: len(good) // 2])
        return r"corrupt or truncated file \(RuntimeError: PytorchStreamReader failed reading zip archive"
    if kind == "random bytes":
        ckpt.write_bytes(random.Random(0).randbytes(len(good)))
        return "not a torch checkpoint, or truncated"
    if kind == "flipped bytes":  # right length, the zip directory intact, tensor data damaged
        data = bytearray(good)
        for i in random.Random(1).sample(range(len(data) // 4, len(data) // 2), 64):
            data[i] ^= 0xFF
        ckpt.write_bytes(bytes(data))
        return r"corrupt or truncated file|not a torch checkpoint"
    if kind == "a list":
        torch.save([1, 2, 3], ckpt)
        return "is not a complete pyseg_noise checkpoint .*: it holds a list"
    if kind == "other format":
        torch.save({**state, "format": 7}, ckpt)
        return "its format is 7, expected 1"
    if kind == "missing keys":
        torch.save({k: v for k, v in state.items() if k not in ("optimizer", "networks")}, ckpt)
        return "it lacks the entries networks, optimizer"
    if kind == "wrong type":
        torch.save({**state, "iteration": "2"}, ckpt)
        return "its entry 'iteration' is a str"
    if kind == "wrong config":
        torch.save({**state, "config": {**state["config"], "method": "pint"}}, ckpt)
        return "its config is for method 'pint' but the checkpoint is of 'vnet'"
    if kind == "code payload (torch.save)":
        torch.save({**state, "extra": _Payload(marker)}, ckpt)
        return (r"it holds Python objects other than tensors and plain values, which are refused and were not "
                r"unpickled \(weights_only=True: Trying to load unsupported GLOBAL posix.system")
    if kind == "code payload (raw pickle)":
        ckpt.write_bytes(pickle.dumps({"format": 1, "x": _Payload(marker)}, protocol=2))
        return "it holds Python objects other than tensors and plain values, which are refused"
    raise AssertionError(kind)


KINDS = ["empty", "truncated", "random bytes", "flipped bytes", "a list", "other format", "missing keys", "wrong type",
         "wrong config", "code payload (torch.save)", "code payload (raw pickle)"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_or_hostile_checkpoint_is_refused_everywhere(kind, data, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    ckpt = checkpoint_path(run)
    marker = tmp_path / "payload_ran"
    expected = _damage(kind, ckpt, marker)
    damaged = ckpt.read_bytes()
    if kind == "flipped bytes":
        try:  # flipping bytes inside tensor data may leave a readable file: then it must load as-is
            load_checkpoint(run)
            pytest.skip("the flipped bytes hit only tensor payload, which no format check can see")
        except CheckpointError:
            pass
    named = re.escape(str(ckpt))
    for load in (lambda: load_checkpoint(run), lambda: load_checkpoint(ckpt), lambda: load_trained(run, "cpu")):
        with pytest.raises(CheckpointError, match=rf"{named}.*{expected}") as info:
            load()
        assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match=rf"{named}.*{expected}"):
        Trainer(tiny_config(data, "vnet", iterations=4), run, resume=True, validate=False).fit()
    assert not marker.exists(), "the pickle payload was executed"
    assert ckpt.read_bytes() == damaged  # refused, not overwritten
    assert _temporaries(run) == []


@pytest.mark.parametrize("kind", ["truncated", "missing keys", "code payload (torch.save)"])
def test_the_command_line_refuses_a_damaged_checkpoint_with_one_line(kind, data, finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    marker = tmp_path / "payload_ran"
    expected = _damage(kind, checkpoint_path(run), marker)
    for argv in (["train", "vnet", "--out", str(run), "--resume", "--no-progress"],
                 ["predict", str(run), "--input", str(data), "--out", str(tmp_path / "pred"), "--no-progress"]):
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert re.match(rf"pyseg-noise {argv[0]}: error: .*{re.escape(str(checkpoint_path(run)))}.*{expected}", err[0])
    assert not marker.exists()
    assert not (tmp_path / "pred").exists() or not any((tmp_path / "pred").iterdir())


def test_a_protocol_4_pickle_payload_prints_one_line_no_warning_and_runs_nothing(data, tmp_path, capsys):
    """Everything the command line prints: no traceback, no torch warning, and the payload did not run."""
    ckpt = tmp_path / "evil.pt"
    marker = tmp_path / "payload_ran"
    ckpt.write_bytes(pickle.dumps({"format": 1, "x": _Payload(marker)}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["predict", str(ckpt), "--input", str(data), "--out", str(tmp_path / "pred"), "--no-progress"])
    assert code == 2 and [str(w.message) for w in caught] == []
    # protocol 4 frames its opcodes, which the weights-only unpickler refuses before it meets the GLOBAL
    # (torch also warns about the protocol: that warning is not shown)
    assert capsys.readouterr().err.splitlines() == [
        f"pyseg-noise predict: error: cannot read checkpoint {ckpt}: not a torch checkpoint, or truncated "
        "(UnpicklingError: Unsupported operand 149)"]
    assert not marker.exists()


def test_a_checkpoint_that_does_not_fit_the_network_is_refused_naming_the_entry(data, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    ckpt = checkpoint_path(run)
    state = torch.load(ckpt, weights_only=True)
    (name, sd), = state["networks"].items()
    key = next(iter(sd))
    sd[key] = torch.zeros(3, 1)  # wrong shape
    torch.save(state, ckpt)
    pattern = rf"checkpoint {re.escape(str(ckpt))}: its network '{name}' does not fit this run: RuntimeError: .*{key}"
    with pytest.raises(CheckpointError, match=pattern):
        load_trained(run, "cpu")
    with pytest.raises(CheckpointError, match=pattern):
        Trainer(tiny_config(data, "vnet", iterations=2), run, resume=True, validate=False).fit()
    state["networks"] = {"other": sd}
    torch.save(state, ckpt)
    with pytest.raises(CheckpointError, match=rf"holds the networks \['other'\] but method 'vnet' has \['{name}'\]"):
        load_trained(run, "cpu")
    state["networks"] = {name: {**sd, key: torch.zeros_like(torch.load(checkpoint_path(finished_run),
                                                                       weights_only=True)["networks"][name][key])}}
    state["optimizer"]["param_groups"] = []
    torch.save(state, ckpt)
    with pytest.raises(CheckpointError, match=r"its optimizer does not fit this run: ValueError"):
        Trainer(tiny_config(data, "vnet", iterations=2), run, resume=True, validate=False).fit()
