"""Run-folder faults besides the checkpoint: a full disk while writing ``config.yaml``, ``log.jsonl``, ``eval/``
or the plots.

As in test_checkpoint_faults.py, the device fills up part-way through a real write:
the file objects the library opens are wrapped so that the bytes past a point fail
with ENOSPC (what reached the disk before stays, as on a real full disk).

* ``log.jsonl`` during training: RunOutputWriteError naming the file and the
  iteration, training stops, the last checkpoint is intact, and resuming gives the
  run an uninterrupted one gives, with a log that reads as one run.
* ``eval/cases.csv``, ``eval/summary.json``, ``plots/loss.png``, ``plots/case.png``
  after the last iteration: the error names the file and the finished checkpoint, no
  torn file is left, and resuming the finished run writes them.
* ``config.yaml`` when a run starts: the error names the file, no torn file is left,
  and the same command starts the run once there is space.
* The command line prints one error line (no traceback) and exits with 1.
* A failed rewrite of the log on resume leaves the log as it was.
"""
from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
from pathlib import Path

import matplotlib.figure
import pytest
import torch

from pyseg_noise.cli import main
from pyseg_noise.training import RunOutputWriteError, Trainer, load_checkpoint
from pyseg_noise.training import config as config_module, run_log, trainer
from pyseg_noise.training.checkpoint import checkpoint_path
from pyseg_noise.training.run_log import RunLog, read_log

from ..training.tiny_runs import make_tiny_dataset, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

ENOSPC = f"{os.strerror(errno.ENOSPC)} (ENOSPC)"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("output_faults") / "data")


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory):
    """A finished 2-iteration V-Net run with its evaluation and plots, to copy and resume."""
    run = tmp_path_factory.mktemp("output_faults_run") / "run"
    Trainer(tiny_config(data, "vnet", iterations=2, plots=True), run).fit()
    return run


class _FullDisk(io.RawIOBase):
    """A raw file whose device fills up at the first write that holds ``fills_at`` (any write if empty).

    That write stores the first half of its bytes and fails with ENOSPC, as do all later ones.
    """

    def __init__(self, f, fills_at: bytes = b""):
        self._f = f
        self._fills_at = fills_at
        self._full = False

    def writable(self):
        return True

    def write(self, b):
        if self._full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if self._fills_at in bytes(b):
            self._f.write(bytes(b[: len(b) // 2]))
            self._f.flush()
            self._full = True
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._f.write(b)

    def close(self):
        self._f.close()
        super().close()


def _full_disk_open(name: str, fills_at: bytes = b""):
    """An ``open`` that gives the file called ``name`` a device that fills up at the write holding ``fills_at``."""
    real = builtins.open

    def fake_open(file, mode="r", *args, **kwargs):
        if Path(file).name != name or not any(m in mode for m in "wax"):
            return real(file, mode, *args, **kwargs)
        buffered = io.BufferedWriter(_FullDisk(real(file, mode.replace("t", "").replace("b", "") + "b"), fills_at))
        if "b" in mode:
            return buffered
        return io.TextIOWrapper(buffered, encoding=kwargs.get("encoding") or "utf-8", newline=kwargs.get("newline"))

    return fake_open


def _full_disk_savefig(name: str):
    """``Figure.savefig`` onto a device that fills up half-way through the PNG called ``name``."""
    real = matplotlib.figure.Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        if Path(fname).name != name:
            return real(self, fname, *args, **kwargs)
        with open(fname, "wb") as f:
            png = io.BytesIO()
            real(self, png, *args, format="png", **kwargs)
            disk = io.BufferedWriter(_FullDisk(f))
            disk.write(png.getvalue())
            disk.flush()

    return savefig


def _fill(monkeypatch, output: str):
    """Make writing ``output`` (a path inside the run folder) meet a full disk."""
    name = Path(output).name
    if output == "config.yaml":
        monkeypatch.setattr(config_module, "open", _full_disk_open(name), raising=False)
    elif output == "log.jsonl":  # the record of iteration 5 is the first that does not fit
        monkeypatch.setattr(run_log, "open", _full_disk_open(name, fills_at=b'{"iteration": 5,'), raising=False)
    elif output.startswith("eval/"):
        monkeypatch.setattr(trainer, "open", _full_disk_open(name), raising=False)
    else:
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", _full_disk_savefig(name))


def _config(data, **kw):
    return tiny_config(data, "vnet", **{"iterations": 6, "checkpoint_every": 2, **kw})


# ----------------------------------------------------------------------------- config.yaml
def test_a_full_disk_while_writing_the_config_is_one_error_line(data, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    target = run / "config.yaml"
    _fill(monkeypatch, "config.yaml")
    with pytest.raises(RunOutputWriteError) as info:
        Trainer(_config(data), run).fit()
    assert str(info.value) == f"cannot write {target}: {ENOSPC}"
    assert info.value.path == target and info.value.errno == errno.ENOSPC
    assert not target.exists() and not checkpoint_path(run).exists()  # no torn config, nothing trained

    code = main(_train_argv(data, run, 2))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == [f"pyseg-noise train: error: cannot write {target}: {ENOSPC}"]

    monkeypatch.undo()  # space freed: the same command starts the run
    assert main(_train_argv(data, run, 2)) == 0
    assert target.read_text().startswith("method: vnet")


# ----------------------------------------------------------------------------- log.jsonl
@pytest.mark.slow  # interrupted, resumed and uninterrupted training runs (the fast tier leaves it out)
def test_a_full_disk_while_logging_stops_training_and_keeps_the_last_checkpoint(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _fill(monkeypatch, "log.jsonl")
    with pytest.raises(RunOutputWriteError) as info:
        Trainer(_config(data), run, validate=False).fit()
    log = run / "log.jsonl"
    assert str(info.value) == (f"training stopped after iteration 5 of 6: cannot write {log}: {ENOSPC}; "
                               "last good checkpoint: iteration 4")
    assert info.value.errno == errno.ENOSPC and info.value.path == log and isinstance(info.value, OSError)
    assert load_checkpoint(run)["iteration"] == 4  # intact, and training stopped before writing another
    # the torn half line of iteration 5 is skipped
    assert [r["iteration"] for r in read_log(run) if "split" not in r] == [1, 2, 3, 4]
    assert not log.read_text().endswith("\n")

    monkeypatch.undo()  # space freed: resume finishes the run exactly as an uninterrupted one
    assert Trainer(_config(data), run, resume=True, validate=False).fit().iteration == 6
    assert [r["iteration"] for r in read_log(run) if "split" not in r] == [1, 2, 3, 4, 5, 6]
    assert all(line.startswith("{") and line.endswith("}") for line in log.read_text().splitlines())
    straight = tmp_path / "straight"
    Trainer(_config(data), straight, validate=False).fit()
    a, b = load_checkpoint(run), load_checkpoint(straight)
    for name in a["networks"]:
        for key, value in a["networks"][name].items():
            assert torch.equal(value, b["networks"][name][key]), key


def test_a_failed_rewrite_of_the_log_on_resume_leaves_it_as_it_was(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"iteration": i, "loss": 1.0 / i}) + "\n" for i in range(1, 7)))
    before = log.read_bytes()
    monkeypatch.setattr(run_log, "open", _full_disk_open(".log.jsonl.tmp"), raising=False)
    with pytest.raises(RunOutputWriteError, match=f"^cannot write {log}: No space left on device"):
        RunLog(tmp_path, progress=False, resume_from=4)
    assert log.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]
    monkeypatch.undo()
    RunLog(tmp_path, progress=False, resume_from=4).close()
    assert [r["iteration"] for r in read_log(log)] == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- eval/ and plots/
@pytest.mark.parametrize("output", ["eval/cases.csv", "eval/summary.json", "plots/loss.png", "plots/case.png"])
def test_a_full_disk_after_training_names_the_file_and_resume_writes_it(data, finished_run, tmp_path, monkeypatch,
                                                                          output):
    run = shutil.copytree(finished_run, tmp_path / "run")
    target = run / output
    target.unlink()
    checkpoint = checkpoint_path(run).read_bytes()
    config = tiny_config(data, "vnet", iterations=2, plots=True)
    _fill(monkeypatch, output)
    with pytest.raises(RunOutputWriteError) as info:
        Trainer(config, run, resume=True).fit()
    assert str(info.value) == (f"cannot write {target}: {ENOSPC}; training is finished (checkpoint "
                               f"{checkpoint_path(run)}, iteration 2 of 2): free space and resume the run to "
                               "write eval/ and plots/")
    assert info.value.path == target and info.value.errno == errno.ENOSPC
    assert not target.exists()  # the half-written file was removed, not left torn
    assert checkpoint_path(run).read_bytes() == checkpoint

    monkeypatch.undo()
    result = Trainer(config, run, resume=True).fit()
    assert result.iteration == 2 and target.stat().st_size > 0
    assert json.loads((run / "eval" / "summary.json").read_text())["iteration"] == 2
    assert checkpoint_path(run).read_bytes() == checkpoint


def _train_argv(data, run, iterations):
    return ["train", "vnet", "--data", str(data), "--out", str(run), "--iterations", str(iterations),
            "--batch-size", "2", "--checkpoint-every", "2", "--no-progress", "--set", "data.crop_size=[32,32,16]",
            "--set", "model.n_filters=2", "--set", "val_stride=[16,16,16]", "--set", "plots=false",
            "--set", "log_every=1"]


@pytest.mark.slow  # CLI training runs, stopped and resumed (the fast tier leaves it out)
@pytest.mark.parametrize("output", ["log.jsonl", "eval/cases.csv"])
def test_a_full_disk_through_the_command_line_is_one_error_line(data, tmp_path, monkeypatch, capsys, output):
    run = tmp_path / "run"
    iterations = 6 if output == "log.jsonl" else 2
    _fill(monkeypatch, output)
    code = main(_train_argv(data, run, iterations))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    if output == "log.jsonl":
        assert err[0] == (f"pyseg-noise train: error: training stopped after iteration 5 of 6: cannot write "
                          f"{run / 'log.jsonl'}: {ENOSPC}; last good checkpoint: iteration 4")
        assert load_checkpoint(run)["iteration"] == 4
    else:
        assert err[0] == (f"pyseg-noise train: error: cannot write {run / output}: {ENOSPC}; training is finished "
                          f"(checkpoint {checkpoint_path(run)}, iteration 2 of 2): free space and resume the run "
                          "to write eval/ and plots/")
        assert load_checkpoint(run)["finished"]

    monkeypatch.undo()  # space freed: --resume completes the run
    assert main(_train_argv(data, run, iterations) + ["--resume"]) == 0
    assert (run / "eval" / "cases.csv").read_text().startswith("case,")
    assert [r["iteration"] for r in read_log(run) if "split" not in r] == list(range(1, iterations + 1))
