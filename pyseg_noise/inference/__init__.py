"""Whole-volume inference: :func:`sliding_window_inference` (LA patch/stride convention)."""
from .sliding_window import sliding_window_inference, window_starts

__all__ = ["sliding_window_inference", "window_starts"]
