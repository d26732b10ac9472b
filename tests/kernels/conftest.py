"""Run the Triton kernels in Triton's CPU interpreter when there is no GPU.

``triton.jit`` picks the interpreter when ``pyseg_noise.kernels`` is first
imported, so the variable must be set before that import; tests/conftest.py
does the same for the whole suite, this keeps ``pytest tests/kernels`` usable
on its own. On a CUDA machine nothing is set and the kernels compile.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
