"""What the PTX of a compiled kernel says about its memory accesses and integer divisions.

Kept apart from gpu_compile.py (which switches Triton out of interpreter mode when imported), so
the test process can check the parser itself.
"""
from __future__ import annotations

import re

__all__ = ["ptx_facts"]

_VEC = re.compile(r"\b(ld|st)\.global(?:\.[a-z0-9_:]+)*?\.v(\d)\.[bfsu](\d+)")
_SCALAR = re.compile(r"\b(ld|st)\.global(?:\.[a-z0-9_:]+)*?\.[bfsu](\d+)\b")
_DIV64 = re.compile(r"\b(?:div|rem)(?:\.[a-z]+)*\.[su]64\b")


def ptx_facts(ptx: str) -> dict:
    """Widest global load/store (bytes) and the number of 64-bit integer divisions/remainders."""
    width = {"ld": 0, "st": 0}
    for op, n, bits in _VEC.findall(ptx):
        width[op] = max(width[op], int(n) * int(bits) // 8)
    for op, bits in _SCALAR.findall(ptx):
        width[op] = max(width[op], int(bits) // 8)
    return {"ld_vec": width["ld"], "st_vec": width["st"], "div64": len(_DIV64.findall(ptx))}
