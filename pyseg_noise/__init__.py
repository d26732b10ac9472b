"""pyseg_noise: fused ops and training loops for 3D segmentation with noisy labels.

``pyseg_noise.ops`` holds the fused ops (PINT's uncertainty-weighted losses,
TSMAN's loss attention, the mean teacher's EMA); ``pyseg_noise.losses`` their
``nn.Module`` wrappers. See SPEC.md for the formulas.
"""
__version__ = "0.1.0"


def cpu_capability():
    """The SIMD level the C++ kernels were built for: "AVX512", "AVX2" or "DEFAULT"
    (set at build time by setup.py, see PYSEG_NOISE_CPU_CAPABILITY), or None when
    the extension is not built."""
    from pyseg_noise.ops.dispatch import cpu_capability as _cpu_capability

    return _cpu_capability()
