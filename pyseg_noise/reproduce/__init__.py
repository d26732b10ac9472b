"""Reproductions of the papers' tables (``pyseg-noise reproduce``).

* :func:`reproduce_pint` — PINT's Table 1 (Dice and ASD of V-Net on clean and
  noisy labels, PNT, INT, PINT and the registered baselines at 25/50/75 % noise),
  printed beside the paper's numbers with a collapse column.
* :data:`SCALES` — ``smoke``, ``cpu`` and ``paper`` budgets.
* :data:`PINT_TABLE1` — the published numbers.
"""
from .paper_tables import PINT_CLEAN_VNET, PINT_TABLE1, paper_entry
from .pint_protocol import ReproduceReport, ReproduceSettings, default_methods, reproduce_pint
from .scales import SCALES, Scale, default_scale

#: paper name -> reproduction function (``pyseg-noise reproduce NAME``)
REPRODUCTIONS = {"pint": reproduce_pint}

__all__ = [
    "reproduce_pint",
    "ReproduceSettings",
    "ReproduceReport",
    "default_methods",
    "SCALES",
    "Scale",
    "default_scale",
    "PINT_TABLE1",
    "PINT_CLEAN_VNET",
    "paper_entry",
    "REPRODUCTIONS",
]
