"""Triton kernels of pyseg_noise (installed as ``pyseg_noise.kernels``)."""
