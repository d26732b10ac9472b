"""``reproduce pint --jobs N``: the trainings run in worker processes and give the same table."""
from __future__ import annotations

import json

import pytest

from pyseg_noise.reproduce import ReproduceSettings
from pyseg_noise.reproduce.pint_protocol import reproduce_pint
from pyseg_noise.training.config import ConfigError


def _run(out, jobs, lines):
    return reproduce_pint(ReproduceSettings(out=str(out), scale="smoke", methods=["pint"], progress=False,
                                            jobs=jobs), print_fn=lines.append)


@pytest.mark.slow  # two smoke reproductions (~40 s)
def test_parallel_trainings_give_the_sequential_table(tmp_path, monkeypatch, one_thread):
    # one torch thread here and in each worker: another thread count sums in another order
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    seq_lines, par_lines = [], []
    seq = _run(tmp_path / "seq", None, seq_lines)
    par = _run(tmp_path / "par", 2, par_lines)
    assert any("in 2 worker processes" in line for line in par_lines)
    assert not any("worker processes" in line for line in seq_lines)
    key = lambda r: (r.method, r.labels, r.seed)  # noqa: E731
    a, b = sorted(seq.records, key=key), sorted(par.records, key=key)
    assert [key(r) for r in a] == [key(r) for r in b] and len(a) == 4  # clean, noisy, same budget, pint
    for x, y in zip(a, b):
        assert x.dice == pytest.approx(y.dice, abs=1e-6), x.method
        assert y.seconds > 0  # trained by a worker of this invocation, reported with its time
    report = json.loads((tmp_path / "par" / "report.json").read_text())
    assert len(report["runs"]) == 4
    # a rerun reuses every finished run: nothing is trained again
    again = []
    _run(tmp_path / "par", 2, again)
    assert not any("worker processes" in line for line in again)
    assert sum("[reused]" in line for line in again) == 4


def test_jobs_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="--jobs"):
        _run(tmp_path, 0, [])
