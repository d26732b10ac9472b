"""Pieces of `reproduce pint`: scales, noise radii, paper numbers, the table and its collapse column."""
import math

import yaml

from pyseg_noise.reproduce import PINT_TABLE1, SCALES, paper_entry
from pyseg_noise.reproduce.noisy_labels import structure_radius_range, write_noisy_labels
from pyseg_noise.reproduce.pint_protocol import _split_overrides, default_methods
from pyseg_noise.reproduce.report import RunRecord, aggregate, markdown_table
from pyseg_noise.training import detect_collapse
from pyseg_noise.training.config import config_from_dict, merge_dicts

from .tiny_runs import REPO


def test_paper_numbers():
    assert PINT_TABLE1["pint"][0.5] == (89.04, 0.71, 1.92, 0.17)
    assert PINT_TABLE1["vnet"][0.75] == (72.76, 1.00, 5.48, 0.06)
    assert paper_entry("vnet", None) == (91.14, None, 1.52, None)
    assert paper_entry("pnt", 0.25) == (88.29, 0.43, 1.82, 0.11)
    assert paper_entry("tsman", 0.5) is None


def test_scales_keep_the_paper_proportions():
    paper = SCALES["paper"]
    assert (paper.iterations, paper.lr_step, paper.image_phase_iterations, paper.lr) == (6000, 2500, 2000, 0.01)
    assert tuple(paper.crop_size) == (112, 112, 80) and paper.n_filters == 16 and paper.batch_size == 4
    cpu = SCALES["cpu"]
    assert cpu.lr_step == round(cpu.iterations * 2500 / 6000)
    assert cpu.image_phase_iterations == round(cpu.iterations / 3)


def test_cpu_example_config_is_the_cpu_scale():
    cfg = yaml.safe_load((REPO / "configs" / "pint_cpu.yaml").read_text())
    cpu = SCALES["cpu"]
    want = merge_dicts(cpu.config_overrides(), {"method": "pint", "method_options": cpu.method_overrides("pint")})
    got = config_from_dict(cfg).to_dict()
    ref = config_from_dict(want).to_dict()
    for key in ("iterations", "batch_size", "val_stride", "data", "model", "optim", "method_options"):
        assert got[key] == ref[key], key


def test_radius_range_scales_with_the_structure():
    assert structure_radius_range((64, 64, 48), 0.075) == (2, 7)
    # an atrium the size of LA's (r_eq = 40 voxels) gets the paper's radii
    n = 4 / 3 * math.pi * 40 ** 3
    assert structure_radius_range((100, 100, 100), n / 1e6) == (5, 18)


def test_noisy_labels_go_to_the_run_folder(tiny_h5, tmp_path):
    before = sorted(p.stat().st_mtime_ns for p in tiny_h5.rglob("*.h5"))
    manifest = write_noisy_labels(tiny_h5, tmp_path / "labels", 0.5, seed=0, radius_range=(1, 2))
    assert manifest["num_noisy"] == 2 and len(manifest["records"]) == 4
    assert sorted(p.name for p in (tmp_path / "labels").glob("*.h5")) == [f"case_00{i}.h5" for i in range(4)]
    assert sorted(p.stat().st_mtime_ns for p in tiny_h5.rglob("*.h5")) == before  # the dataset is untouched
    again = write_noisy_labels(tiny_h5, tmp_path / "labels", 0.5, seed=0, radius_range=(1, 2))
    assert again == manifest


def test_overrides_per_method_and_default_methods():
    common, per = _split_overrides(["optim.lr=0.1", "pint:method_options.ce_warmup_iterations=50"])
    assert common == ["optim.lr=0.1"] and per == {"pint": ["method_options.ce_warmup_iterations=50"]}
    assert default_methods("cpu") == ["pnt", "int", "pint"]
    assert default_methods("paper")[:3] == ["pnt", "int", "pint"]


def _record(method, labels, rate, dice, fg=0.07, collapsed=False, reason=""):
    return RunRecord(method=method, labels=labels, noise_rate=rate, repeat=0, seed=0, run_dir="", dice=dice, asd=2.0,
                     hd95=5.0, jaccard=dice, fg_pred=fg, fg_ref=0.07, seconds=1.0, collapsed=collapsed,
                     collapse_reason=reason)


def test_table_rows_order_and_collapse_column():
    verdict = detect_collapse({"dice": 0.01, "fg_pred": 0.0001, "fg_ref": 0.07}, {"dice": 0.8})
    assert verdict.collapsed and verdict.reason.startswith("predicts background almost everywhere")
    assert detect_collapse({"dice": 0.1, "fg_pred": 0.05, "fg_ref": 0.07}, {"dice": 0.8}).reason.startswith(
        "Dice 0.100 while the clean-label V-Net")
    assert not detect_collapse({"dice": 0.7, "fg_pred": 0.06, "fg_ref": 0.07}, {"dice": 0.8})
    records = [_record("pint", "noisy", 0.5, 0.01, 0.0001, True, verdict.reason), _record("vnet", "clean", 0.0, 0.85),
               _record("vnet", "noisy", 0.5, 0.7)]
    rows = aggregate(records, ["pint"])
    assert [(r.method, r.labels) for r in rows] == [("vnet", "clean"), ("vnet", "noisy"), ("pint", "noisy")]
    table = markdown_table(rows).splitlines()
    assert table[2] == "| V-Net | clean | 0% | 85.00 | 2.00 | 91.14 | 1.52 | 1 | no |"
    assert table[4] == "| PINT | noisy | 50% | 1.00 | 2.00 | 89.04 ± 0.71 | 1.92 ± 0.17 | 1 | COLLAPSED 1/1 |"
