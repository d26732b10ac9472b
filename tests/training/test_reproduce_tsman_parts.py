"""Pieces of `reproduce tsman`: the paper's numbers, the scales, HD in the metrics, rows, verdicts, settings."""
import math

import numpy as np
import pytest

from pyseg_noise.metrics import hd
from pyseg_noise.reproduce import REPRODUCTIONS, TSMAN_SCALES, reproduce_tsman
from pyseg_noise.reproduce.common import ReproduceSettings, reject_foreign
from pyseg_noise.reproduce.paper_tables import TSMAN_TABLE1, TSMAN_TABLE1_ROWS, TSMAN_TABLE2, TSMAN_TABLE2_ROWS
from pyseg_noise.reproduce.scales import tsman_base_iterations
from pyseg_noise.reproduce.tsman_protocol import TSMANRecord, _aggregate, _conclusions, _table2_markdown
from pyseg_noise.training import detect_collapse
from pyseg_noise.training.config import ConfigError, config_from_dict, merge_dicts
from pyseg_noise.training.tsman import TSMANOptions
from pyseg_noise.training.validation import METRIC_COLUMNS, case_metrics


def test_paper_numbers():
    assert TSMAN_TABLE1[0.3] == {"model0": 0.005, "model1": 0.154, "model2": 0.171, "md": 0.184,
                                 "dd0": 0.104, "dd1": 0.163, "dd2": 0.168, "hd": 0.191}
    assert TSMAN_TABLE1[0.8]["md"] == 0.771 and TSMAN_TABLE1[0.8]["dd2"] == 0.806
    assert TSMAN_TABLE2 == {"baseline": -1.167, "f4": -0.737, "f3+f4": -0.601, "f2+f3+f4": -0.576, "tsman": -0.561}
    # the paper's bold entries: HD is the best of each xi, and the text's "0.184 and 0.168" at xi = 30 %
    for rows in TSMAN_TABLE1.values():
        assert rows["hd"] == max(rows.values())
    assert max(TSMAN_TABLE1[0.3][k] for k in ("dd0", "dd1", "dd2")) == 0.168
    # Table 2 adds f4, f3, f2, f1 in turn, and the score rises at every step
    assert [TSMAN_TABLE2_ROWS[k][1:] for k in TSMAN_TABLE2_ROWS] == [
        ((), False), ((), True), (("f3",), True), (("f2", "f3"), True), (("f1", "f2", "f3"), True)]
    scores = [TSMAN_TABLE2[k] for k in TSMAN_TABLE2_ROWS]
    assert scores == sorted(scores)
    assert list(TSMAN_TABLE1_ROWS.values()) == ["A", "B", "C", "MD (A+B+C)", "DD(A)", "DD(B)", "DD(C)", "HD (DD + MD)"]
    assert REPRODUCTIONS["tsman"] is reproduce_tsman


def test_base_iterations_keep_the_papers_proportions():
    assert tsman_base_iterations(35000) == (10000, 15000, 20000)
    assert tsman_base_iterations(700) == (200, 300, 400)
    assert tsman_base_iterations(2) == (1, 1, 1)


@pytest.mark.parametrize("name", ["smoke", "cpu", "paper"])
def test_every_scale_is_a_valid_tsman_config(name):
    scale = TSMAN_SCALES[name]
    values = merge_dicts(scale.config_overrides(), {"method": "tsman", "method_options": scale.method_overrides()})
    cfg = config_from_dict(values)
    assert cfg.method_options.subnet == "densevoxnet" and cfg.optim.lr_policy == "poly"
    assert (cfg.optim.lr, cfg.optim.poly_power, cfg.optim.weight_decay, cfg.optim.momentum) == (0.05, 0.9, 5e-4, 0.9)
    assert all(0 < xi < 1 for xi in scale.labelled_fractions) and 0 < scale.ablation_fraction < 1
    assert scale.n_train >= 2 and all(s <= v for s, v in zip(scale.crop_size, scale.shape))


def test_paper_scale_is_tsmans_settings():
    paper = TSMAN_SCALES["paper"]
    assert (paper.iterations, paper.batch_size, tuple(paper.crop_size)) == (35000, 3, (64, 64, 64))
    assert paper.labelled_fractions == (0.3, 0.5, 0.8) and paper.n_train == 10 and paper.n_test == 10
    defaults = TSMANOptions()
    assert (paper.stem_channels, paper.growth_rate, list(paper.n_layers), list(paper.up_channels)) == (
        defaults.stem_channels, defaults.growth_rate, defaults.n_layers, defaults.up_channels)


def test_validation_reports_the_full_hausdorff_distance():
    ref = np.zeros((12, 12, 8), np.int64)
    ref[3:8, 3:8, 2:6] = 1
    pred = np.zeros_like(ref)
    pred[3:8, 3:8, 2:6] = 1
    pred[11, 11, 7] = 1  # one stray voxel: HD jumps, HD95 and ASD hardly move
    m = case_metrics(pred, ref, 2)
    assert "hd" in METRIC_COLUMNS and m["hd"] == pytest.approx(hd(pred, ref)) and m["hd"] > m["hd95"]
    assert m["hd"] == pytest.approx(6.0)  # from (11, 11, 7) to the corner (7, 7, 5) of the cube


def test_collapse_reason_names_the_reference():
    v = detect_collapse({"dice": 0.05, "fg_pred": 0.05, "fg_ref": 0.07}, {"dice": 0.8, "fg_pred": 0.07, "fg_ref": 0.07},
                        reference_name="the no-attention baseline trained on the same labels")
    assert v.collapsed and v.reason == "Dice 0.050 while the no-attention baseline trained on the same labels reaches 0.800"


def _rec(table, row, dice, repeat=0, xi=0.5, collapsed=False):
    return TSMANRecord(table=table, xi=xi, row=row, repeat=repeat, seed=repeat, dice=dice, asd=1.0 + repeat,
                       hd=4.0, hd95=3.0, fg_pred=0.07, fg_ref=0.07, cases=2, seconds=1.0, source="x",
                       collapsed=collapsed, collapse_reason="predicts background" if collapsed else "")


def test_rows_aggregate_over_repeats_in_table_order():
    records = [_rec("table2", row, 0.5 + 0.1 * i + 0.02 * r, repeat=r, collapsed=(row == "f4" and r == 1))
               for r in range(2) for i, row in enumerate(reversed(list(TSMAN_TABLE2_ROWS)))]
    rows = _aggregate(records, "table2")
    assert [r.row for r in rows] == list(TSMAN_TABLE2_ROWS)
    tsman = rows[-1]
    assert tsman.dice[0] == pytest.approx(51.0) and tsman.dice[1] == pytest.approx(math.sqrt(2) * 1.0)
    assert tsman.asd == (pytest.approx(1.5), pytest.approx(math.sqrt(0.5))) and tsman.paper == -0.561
    assert rows[1].collapsed == 1 and rows[1].n == 2 and rows[1].reasons == ["repeat 1: predicts background"]
    text = _table2_markdown(rows)
    assert "| f4 (LA) |  |  |  | ✓ | 81.00 ± 1.41 | 1.50 ± 0.71 | 4.00 ± 0.00 | -0.737 | 2 | COLLAPSED 1/2 |" in text


def test_verdicts_compare_hd_and_the_ablation_steps():
    t1 = _aggregate([_rec("table1", k, d) for k, d in
                     zip(TSMAN_TABLE1_ROWS, [0.5, 0.6, 0.7, 0.72, 0.55, 0.65, 0.71, 0.75])], "table1")
    t2 = _aggregate([_rec("table2", k, d) for k, d in zip(TSMAN_TABLE2_ROWS, [0.6, 0.65, 0.64, 0.7, 0.72])], "table2")
    verdicts, warnings = _conclusions(t1, t2)
    assert verdicts[0] == ("Table 1, xi 50%: HD is the best pseudo label by Dice: 75.00% vs 72.00% for the best "
                           "other (MD (A+B+C)) (paper: HD has the best score at xi 50%).")
    assert verdicts[1] == "Table 1, xi 50%: MD 72.00% > best DD 71.00% (DD(C)); paper: MD > best DD."
    assert verdicts[2].startswith("Table 2: adding the attentions one at a time changes Dice by f4 +5.00, f3+f4 "
                                  "-1.00, f2+f3+f4 +6.00, tsman +2.00 points (3 of 4 steps improve")
    assert "TSMAN (all attentions) beats the no-attention baseline on Dice: 72.00% vs 60.00% (+12.00" in verdicts[3]
    assert warnings == []


def test_settings_of_the_other_paper_are_refused():
    reject_foreign(ReproduceSettings(labelled_fractions=[0.3]), "tsman")
    with pytest.raises(ConfigError, match="--labelled-fractions belongs to `reproduce tsman`"):
        reject_foreign(ReproduceSettings(labelled_fractions=[0.3]), "pint")
    with pytest.raises(ConfigError, match="--noise-rates belongs to `reproduce pint`"):
        reject_foreign(ReproduceSettings(noise_rates=[0.5]), "tsman")
