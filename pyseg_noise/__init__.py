"""pyseg_noise: fused ops and training loops for 3D segmentation with noisy labels.

``pyseg_noise.ops`` holds the fused ops (PINT's uncertainty-weighted losses,
TSMAN's loss attention, the mean teacher's EMA); ``pyseg_noise.losses`` their
``nn.Module`` wrappers. See SPEC.md for the formulas.
"""
__version__ = "0.1.0"
