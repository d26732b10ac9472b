"""Every op benchmark, and the ``--ops`` names that select them."""
from __future__ import annotations

from typing import List, Sequence, Tuple

from . import bench_ema, bench_metrics, bench_pint, bench_tsman
from .op_bench import OpBench

__all__ = ["ALL_BENCHES", "FAMILIES", "select"]

ALL_BENCHES: Tuple[OpBench, ...] = bench_pint.BENCHES + bench_tsman.BENCHES + bench_ema.BENCHES + bench_metrics.BENCHES
FAMILIES = ("pint", "tsman", "ema", "metrics")


def select(names: Sequence[str]) -> List[OpBench]:
    """The benchmarks named by op names or family names ("pint", "tsman", "ema",
    "metrics", "all"), in catalogue order, each once.

    Raises:
        ValueError: a name that is neither an op nor a family (the message lists them).
    """
    known = {b.name for b in ALL_BENCHES}
    wanted = set()
    for name in names:
        if name == "all":
            wanted |= known
        elif name in FAMILIES:
            wanted |= {b.name for b in ALL_BENCHES if b.family == name}
        elif name in known:
            wanted.add(name)
        else:
            raise ValueError(
                f"--ops: unknown op {name!r}; choose from the families {', '.join(FAMILIES + ('all',))} "
                f"or the ops {', '.join(b.name for b in ALL_BENCHES)}"
            )
    return [b for b in ALL_BENCHES if b.name in wanted]
