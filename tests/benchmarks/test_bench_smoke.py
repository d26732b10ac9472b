"""Smoke test of the benchmark command: it runs, writes its three files, and the
numbers in them are consistent with each other and with hand-counted bytes.
No assertion on how fast anything is."""
import csv
import math

import pytest
import torch

import pyseg_noise.ops
from pyseg_noise.benchmarks import main
from pyseg_noise.benchmarks import bench_ema, bench_tsman, report, targets, traffic
from pyseg_noise.benchmarks.runner import Row
from pyseg_noise.benchmarks.sizes import volume_sizes

SMOKE_VOXELS = 16 * 16 * 8  # B=1


def _markdown_rows(text):
    """The cells of the Results table of results.md: (header, rows)."""
    section = text.split("## Results", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    return cells[0], cells[2:]


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = [
        "--ops", "pint_pixel_loss,teacher_uncertainty", "--sizes", "smoke", "--modes", "fwd,fwdbwd",
        "--providers", "reference,cpu", "--repeats", "3", "--warmup", "1", "--copy-mb", "8", "--out", str(out),
    ]
    assert main(argv) == 0
    return out


def test_writes_the_three_files(smoke_run):
    for name in ("results.md", "results.csv", "scaling.png"):
        assert (smoke_run / name).stat().st_size > 0
    with open(smoke_run / "scaling.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    md = (smoke_run / "results.md").read_text()
    assert "| torch threads |" in md and "Copy bandwidth:" in md and "## Targets" in md


def test_table_parses_and_matches_the_csv(smoke_run):
    header, rows = _markdown_rows((smoke_run / "results.md").read_text())
    assert header == list(report.TABLE_COLUMNS)
    data = _read_csv(smoke_run / "results.csv")
    providers = ["reference", "cpu"] if pyseg_noise.ops.HAS_CPU_EXTENSION else ["reference"]
    # teacher_uncertainty has only a forward; pint_pixel_loss fwd and fwdbwd
    assert len(rows) == len(data) == 3 * len(providers)
    for cells, rec in zip(rows, data):
        assert len(cells) == len(header)
        line = dict(zip(header, cells))
        assert (line["op"], line["mode"], line["provider"]) == (rec["op"], rec["mode"], rec["provider"])
        assert float(line["median ms"]) == pytest.approx(float(rec["median_s"]) * 1e3, rel=0.01, abs=1e-4)
        q25, q75 = (float(v) for v in line["IQR ms"].split("-"))
        assert q25 <= float(line["median ms"]) <= q75


def test_bytes_speedups_and_memory_are_consistent(smoke_run):
    data = {(r["op"], r["mode"], r["provider"]): r for r in _read_csv(smoke_run / "results.csv")}
    logits = 2 * SMOKE_VOXELS * 4  # C=2, float32
    target = SMOKE_VOXELS * 8  # int64
    expected = {
        ("pint_pixel_loss", "fwd"): logits + target + logits + 4,
        ("pint_pixel_loss", "fwdbwd"): (logits + target + logits + 4) + (logits + target + logits + logits),
        ("teacher_uncertainty", "fwd"): 2 * logits + logits + SMOKE_VOXELS * 4,  # M=2 passes in, prob + entropy out
    }
    for (op, mode, provider), r in data.items():
        assert int(r["min_bytes"]) == expected[(op, mode)]
        median = float(r["median_s"])
        assert float(r["gbps"]) == pytest.approx(int(r["min_bytes"]) / median / 1e9, rel=1e-9)
        assert float(r["pct_copy"]) == pytest.approx(100 * float(r["gbps"]) / float(r["copy_gbps"]), rel=1e-9)
        ref = data[(op, mode, "reference")]
        assert float(r["speedup_eager"]) == pytest.approx(float(ref["median_s"]) / median, rel=1e-9)
        assert float(r["min_s"]) <= median <= float(r["max_s"])
        assert r["memory_method"] == "profiler"
        if mode == "fwdbwd":
            # the logits' gradient is allocated inside the measured call
            assert int(r["grad_bytes"]) == logits
            assert int(r["peak_bytes"]) >= logits


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ops", "no_such_op"], "unknown op 'no_such_op'"),
        (["--modes", "fwd,sideways"], "--modes"),
        (["--providers", "cpu,gpu9000"], "gpu9000"),
        (["--repeats", "0"], "--repeats must be at least 1"),
    ],
)
def test_bad_arguments_name_the_problem(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_minimum_bytes_of_the_tsman_and_ema_rows():
    g = torch.Generator().manual_seed(0)
    size = volume_sizes("smoke", **bench_tsman.PAPER)[0]
    x = bench_tsman.TsmanLoss().inputs(size, torch.device("cpu"), torch.float32, g)
    stream = 3 * SMOKE_VOXELS * 4  # C=3, float32
    fwd = 2 * stream + SMOKE_VOXELS * 8 + SMOKE_VOXELS * 4 + 4  # streams + target in, attention + loss out
    bwd = 2 * stream + SMOKE_VOXELS * 8 + SMOKE_VOXELS * 4 + 2 * stream
    assert traffic.min_bytes("tsman_loss", "fwd", x) == fwd
    assert traffic.min_bytes("tsman_loss", "fwdbwd", x) == fwd + bwd

    ema = bench_ema.EmaUpdate()
    size = ema.sizes("smoke")[0]
    x = ema.inputs(size, torch.device("cpu"), torch.float32, g)
    numel = sum(math.prod(s) for s in bench_ema.SMOKE_SHAPES)
    assert size.voxels == numel
    assert traffic.min_bytes("ema_update_", "fwd", x) == 12 * numel
    assert traffic.min_bytes("metrics_do_not_stream", "fwd", x) is None


def _row(provider, median_s, **kw):
    base = dict(
        family="pint", op="pint_pixel_loss", variant="soft", size="B4 C2 112x112x80", voxels=4 * 112 * 112 * 80,
        paper=True, mode="fwdbwd", provider=provider, device="cpu", dtype="float32", repeats=3,
        median_s=median_s, q25_s=median_s, q75_s=median_s, min_s=median_s, max_s=median_s, warmup_s=median_s,
        grad_bytes=1000, min_bytes=10**9,
    )
    base.update(kw)
    row = Row(**base)
    return row


def test_targets_say_met_and_missed():
    rows = [_row("reference", 1.0), _row("compile", 0.3), _row("cpu", 0.25, peak_bytes=1600)]
    for r in rows:
        r.speedup_eager = 1.0 / r.median_s
        r.speedup_compile = 0.3 / r.median_s
    results = targets.evaluate(rows, copy_bps=10e9)
    verdict = {t.target: (t.verdict, t.value) for t in results if t.row is not None}
    assert verdict["pint_pixel_loss fwd+bwd >= 5x eager"] == ("missed", "4.00x")
    assert verdict["pint_pixel_loss fwd+bwd faster than torch.compile"] == ("met", "1.20x")
    assert verdict["pint_pixel_loss fwd+bwd peak extra memory <= 1.5x logits grad"][0] == "missed"
    # 1e9 bytes in 0.25 s = 4 GB/s = 40% of 10 GB/s
    assert verdict["fused op >= 30% of copy bandwidth at the largest size"] == ("met", "40% of copy")
    assert rows[2].target.startswith("missed >=5x eager (4.00x); met >1x compile (1.20x)")
    assert rows[0].target == "" and rows[1].target == ""
    not_measured = {t.target for t in results if t.verdict == "not measured"}
    assert "tsman_loss fwd+bwd spatial_dims=2 >= 20x eager" in not_measured


@pytest.mark.skipif(not pyseg_noise.ops.HAS_CPU_EXTENSION, reason="C++ extension not built")
def test_gradient_made_in_the_forward_has_no_backward_bandwidth(tmp_path):
    # pint_pixel_loss on the C++ backend computes the gradient in its forward: its bwd row
    # only scales it, so a bandwidth from the backward's minimum traffic would read as many
    # times the copy bandwidth. That row gets a note and no bandwidth (nor its target); the
    # eager row keeps its bytes, and the fwd row says what it includes.
    argv = [
        "--ops", "pint_pixel_loss,pint_image_loss", "--sizes", "smoke", "--modes", "fwd,bwd",
        "--providers", "reference,cpu", "--repeats", "3", "--warmup", "1", "--copy-mb", "8", "--out", str(tmp_path),
    ]
    assert main(argv) == 0
    data = {(r["op"], r["mode"], r["provider"]): r for r in _read_csv(tmp_path / "results.csv")}
    cpu_bwd = data[("pint_pixel_loss", "bwd", "cpu")]
    assert cpu_bwd["min_bytes"] == "" and cpu_bwd["gbps"] == "" and cpu_bwd["pct_copy"] == ""
    assert "only scales the gradient" in cpu_bwd["target"] and "copy" not in cpu_bwd["target"]
    assert int(data[("pint_pixel_loss", "bwd", "reference")]["min_bytes"]) > 0
    cpu_fwd = data[("pint_pixel_loss", "fwd", "cpu")]
    assert float(cpu_fwd["gbps"]) > 0 and "includes the gradient" in cpu_fwd["target"]
    # pint_image_loss's backward is a pass of its own: bytes and bandwidth as usual, no note
    for mode in ("fwd", "bwd"):
        row = data[("pint_image_loss", mode, "cpu")]
        assert int(row["min_bytes"]) > 0 and float(row["gbps"]) > 0 and "gradient" not in row["target"]
