"""Training support: the mean teacher (:class:`EMATeacher`) of PINT."""
from pyseg_noise.training.ema import EMATeacher

__all__ = ["EMATeacher"]
