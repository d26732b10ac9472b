"""Reproductions of the papers' tables (``pyseg-noise reproduce``).

* :func:`reproduce_pint` — PINT's Table 1 (Dice and ASD of V-Net on clean and
  noisy labels, PNT, INT, PINT and the registered baselines at 25/50/75 % noise),
  printed beside the paper's numbers with a collapse column.
* :func:`reproduce_tsman` — TSMAN's Table 1 (pseudo labels of each base model,
  MD, DD and HD at labelled fractions xi) and Table 2 (the attention
  ablation retrained on manual + HD pseudo labels), Dice/ASD/HD beside the
  paper's overall scores, with a collapse column.
* :data:`SCALES` / :data:`TSMAN_SCALES` — ``smoke``, ``cpu`` and ``paper`` budgets.
* :data:`PINT_TABLE1`, :data:`TSMAN_TABLE1`, :data:`TSMAN_TABLE2` — the published numbers.
"""
from .common import ReproduceReport, ReproduceSettings
from .paper_tables import PINT_CLEAN_VNET, PINT_TABLE1, TSMAN_TABLE1, TSMAN_TABLE2, paper_entry
from .pint_protocol import default_methods, reproduce_pint
from .scales import SCALES, TSMAN_SCALES, Scale, TSMANScale, default_scale
from .tsman_protocol import reproduce_tsman

#: paper name -> reproduction function (``pyseg-noise reproduce NAME``)
REPRODUCTIONS = {"pint": reproduce_pint, "tsman": reproduce_tsman}

__all__ = [
    "reproduce_pint",
    "reproduce_tsman",
    "ReproduceSettings",
    "ReproduceReport",
    "default_methods",
    "SCALES",
    "Scale",
    "TSMAN_SCALES",
    "TSMANScale",
    "TSMAN_TABLE1",
    "TSMAN_TABLE2",
    "default_scale",
    "PINT_TABLE1",
    "PINT_CLEAN_VNET",
    "paper_entry",
    "REPRODUCTIONS",
]
