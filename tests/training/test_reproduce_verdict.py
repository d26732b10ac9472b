"""`reproduce pint`'s verdict (regime, paired seeds, one seed, collapse), its equal-budget V-Net row and its header."""
import json

import pytest

from pyseg_noise.reproduce import ReproduceSettings, reproduce_pint
from pyseg_noise.reproduce.pint_protocol import SAME_BUDGET, _conclusions
from pyseg_noise.reproduce.report import RunRecord, aggregate, markdown_table
from pyseg_noise.reproduce.verdict import (REGIME_MIN_CLEAN_DICE, REGIME_MIN_NOISE_GAP, Regime, compare,
                                           paired_difference, regime_check)
from pyseg_noise.training.config import ConfigError, config_from_dict
from pyseg_noise.training.run_log import read_log
from pyseg_noise.training.vnet import PlainVNet

IN = Regime(True)


# ------------------------------------------------------------------ the verdict on hand-made numbers
def test_thresholds_are_the_issue_regime():
    assert (REGIME_MIN_CLEAN_DICE, REGIME_MIN_NOISE_GAP) == (85.0, 6.0)


def test_win():
    v = compare({0: 80.0, 1: 82.0, 2: 81.0}, {0: 77.0, 1: 78.0, 2: 78.0}, noise_rate=0.5, regime=IN)
    # diffs 3, 4, 3: mean 3.333, std 0.577 < mean
    assert v.outcome == "ahead" and v.claims
    assert v.difference.diffs == (3.0, 4.0, 3.0)
    assert "+3.33 ± 0.58 points over 3 seeds" in v.line and "PINT is ahead" in v.line


def test_loss():
    v = compare({0: 70.0, 1: 72.0, 2: 71.5}, {0: 74.0, 1: 75.0, 2: 76.0}, noise_rate=0.5, regime=IN)
    # diffs -4, -3, -4.5: mean -3.833, std 0.764
    assert v.outcome == "behind" and v.claims
    assert "-3.83 ± 0.76 points over 3 seeds" in v.line and "BEHIND" in v.line


def test_not_distinguishable():
    # diffs 2, 1, -1: mean 0.667 <= std 1.528
    v = compare({0: 80.0, 1: 82.0, 2: 79.0}, {0: 78.0, 1: 81.0, 2: 80.0}, noise_rate=0.5, regime=IN)
    assert v.outcome == "not distinguishable" and not v.claims
    assert "+0.67 ± 1.53 points over 3 seeds" in v.line and "NOT DISTINGUISHABLE" in v.line
    # the same spread around a mean of 2 std is distinguishable
    assert compare({0: 83.0, 1: 84.0, 2: 82.0}, {0: 80.0, 1: 80.0, 2: 80.0}, noise_rate=0.5,
                   regime=IN).outcome == "ahead"


def test_pairs_by_seed_not_by_position():
    d = paired_difference({3: 80.0, 1: 70.0, 2: float("nan")}, {1: 69.0, 3: 75.0, 2: 60.0, 4: 50.0})
    assert d.seeds == (1, 3) and d.diffs == (1.0, 5.0)


def test_collapsed_baseline_claims_no_win():
    # the issue's real-data run: a collapsed noisy V-Net and PINT at 34 %
    v = compare({0: 34.0}, {0: 7.4}, noise_rate=0.5, regime=IN, baseline_collapsed=1)
    assert v.outcome == "baseline collapsed" and not v.claims
    assert "collapsed in 1 of 1 runs" in v.line and "no verdict" in v.line and "ahead" not in v.line


def test_out_of_regime():
    # the issue's cpu run: clean 73.71, noisy 64.48, PINT 61.07 (one seed)
    regime = regime_check([73.71], [64.48], 0.5)
    assert not regime.in_regime and "73.71% Dice, below the regime's 85%" in regime.reason
    v = compare({0: 61.07}, {0: 64.48}, noise_rate=0.5, regime=regime)
    assert v.outcome == "out of regime" and not v.claims
    assert "-3.41 points, one seed" in v.line and "OUT OF THE PAPER'S REGIME" in v.line
    # clean in regime, but noise costs the V-Net too little (< 6 points) at 50 %; at 25 % only the clean check counts
    gap = regime_check([90.0, 92.0], [86.0, 87.0], 0.5)
    assert not gap.in_regime and "only 4.50 points below" in gap.reason
    assert regime_check([90.0, 92.0], [86.0, 87.0], 0.25).in_regime
    assert regime_check([90.0, 92.0], [84.0, 84.0], 0.5).in_regime  # exactly 7 points
    assert not regime_check([84.99], [70.0], 0.5).in_regime
    assert regime_check([85.0], [79.0], 0.5).in_regime  # both thresholds inclusive


def test_one_seed():
    v = compare({0: 76.0}, {0: 72.0}, noise_rate=0.5, regime=IN)
    assert v.outcome == "one seed" and not v.claims
    assert "+4.00 points, one seed" in v.line and "ONE SEED" in v.line


def _rec(method, labels, rate, seed, dice, collapsed=False):
    return RunRecord(method=method, labels=labels, noise_rate=rate, repeat=seed, seed=seed, run_dir="", dice=dice,
                     asd=2.0, hd95=5.0, jaccard=dice, fg_pred=0.07, fg_ref=0.07, seconds=1.0, collapsed=collapsed,
                     collapse_reason="predicts background" if collapsed else "")


def test_conclusions_compare_pint_with_each_vnet_row():
    clean, noisy, budget, pint = [0.90, 0.91, 0.89], [0.80, 0.82, 0.81], [0.83, 0.84, 0.82], [0.84, 0.85, 0.86]
    records = []
    for s in range(3):
        records += [_rec("vnet", "clean", 0.0, s, clean[s]), _rec("vnet", "noisy", 0.5, s, noisy[s]),
                    _rec(SAME_BUDGET, "noisy", 0.5, s, budget[s]), _rec("pint", "noisy", 0.5, s, pint[s])]
    rows = aggregate(records, [SAME_BUDGET, "pint"])
    assert [r.name for r in rows] == ["V-Net", "V-Net", "V-Net, same budget as PINT", "PINT"]
    table = markdown_table(rows).splitlines()
    assert table[4] == "| V-Net, same budget as PINT | noisy | 50% | 83.00 ± 1.00 | 2.00 ± 0.00 | — | — | 3 | no |"
    warnings, verdicts = _conclusions(rows, [0.5], records)
    assert warnings == []
    # vs noisy V-Net: diffs 4, 3, 5 -> ahead; vs same budget: diffs 1, 1, 4 -> mean 2 > std sqrt(3) -> ahead
    assert verdicts[0].startswith("At 50% noise, PINT vs V-Net (noisy labels): +4.00 ± 1.00 points over 3 seeds")
    assert "ahead" in verdicts[0] and "(paper: +6.49)" in verdicts[0]
    assert verdicts[1].startswith("At 50% noise, PINT vs V-Net, same budget as PINT: +2.00 ± 1.73 points over 3 seeds")
    assert "ahead" in verdicts[1]
    # out of regime: the clean V-Net below 85 % turns both into warnings and no-claim verdicts
    low = [_rec(r.method, r.labels, r.noise_rate, r.seed, r.dice - 0.1 if r.labels == "clean" else r.dice)
           for r in records]
    warnings, verdicts = _conclusions(aggregate(low, [SAME_BUDGET, "pint"]), [0.5], low)
    assert len(warnings) == 1 and "OUT OF THE PAPER'S REGIME" in warnings[0] and "80.00% Dice" in warnings[0]
    assert all("no verdict" in v for v in verdicts)


# ------------------------------------------------------------------ the equal-budget V-Net's schedule
def test_same_budget_schedule_restarts_at_the_phase2_rate():
    cfg = config_from_dict({"method": "vnet", "iterations": 6, "optim": {"lr": 0.01, "lr_step": 3},
                            "method_options": {"restart_iterations": 3, "restart_lr": 0.02}})
    m = PlainVNet(cfg)
    assert m.total_iterations() == 9
    assert [round(m.lr_at(t), 8) for t in range(9)] == [0.01] * 3 + [0.001] * 3 + [0.02] * 3
    plain = PlainVNet(config_from_dict({"method": "vnet", "iterations": 6, "optim": {"lr_step": 3}}))
    assert plain.total_iterations() == 6 and [round(plain.lr_at(t), 8) for t in range(6)] == [0.01] * 3 + [0.001] * 3
    for key, value, match in (("restart_iterations", -1, "restart_iterations must be an integer >= 0"),
                              ("restart_lr", 0.0, "restart_lr must be > 0")):
        with pytest.raises(ConfigError, match=match):
            config_from_dict({"method": "vnet", "method_options": {key: value}})


# ------------------------------------------------------------------ one smoke reproduction: row, schedule, header
@pytest.mark.slow  # a reproduction end to end (the fast tier leaves it out)
def test_reproduction_has_the_same_budget_row_and_a_header_with_the_values_used(tmp_path):
    lines = []
    settings = ReproduceSettings(out=str(tmp_path / "rep"), scale="smoke", device="cpu", progress=False,
                                 overrides=["iterations=4", "optim.lr_step=3",
                                            "pint:method_options.image_phase_iterations=2",
                                            "pint:method_options.image_phase_lr=0.005"])
    report = reproduce_pint(settings, print_fn=lines.append)
    header = report.header[0]
    assert header == ("PINT Table 1 reproduction — scale: smoke with --set overrides (32x32x16 crops, V-Net "
                      "n_filters 2, batch 2, 4 it, SGD lr 0.01 x0.1 every 3 it; PINT phase 2: +2 it at lr 0.005)")
    assert "a few iterations" not in "\n".join(report.header)  # not the unmodified scale summary
    assert "| V-Net, same budget as PINT | noisy | 50% |" in report.table
    run_dir = tmp_path / "rep" / "runs" / "rep0" / "noise50" / SAME_BUDGET
    lrs = [(rec["iteration"], rec["lr"]) for rec in read_log(run_dir) if "lr" in rec]
    assert [lr for _, lr in lrs] == pytest.approx([0.01, 0.01, 0.01, 0.001, 0.005, 0.005])
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert {(r["method"], r["labels"]) for r in saved["runs"]} == {
        ("vnet", "clean"), ("vnet", "noisy"), (SAME_BUDGET, "noisy"), ("pnt", "noisy"), ("int", "noisy"),
        ("pint", "noisy")}
    assert any(v.startswith("At 50% noise, PINT vs V-Net, same budget as PINT: ") for v in report.verdicts)
    assert all("one seed" in v for v in report.verdicts)
    # the teacher diagnostic of the PINT run, on the corrupted training cases of the manifest
    manifest = json.loads((tmp_path / "rep" / "labels" / "noise50_seed0" / "manifest.json").read_text())
    (diag,) = saved["teacher_diagnostics"]
    assert [c["case"] for c in diag["cases"]] == [r["case"] for r in manifest["records"] if r["noisy"]]
    assert diag["summary"]["cases"] == manifest["num_noisy"] == 2
    assert sum(line.startswith("    teacher diagnostic: 2 corrupted cases") for line in lines) == 1
    assert "## PINT's teacher on the corrupted training cases" in (tmp_path / "rep" / "table.md").read_text()
