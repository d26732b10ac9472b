"""Benchmarks of pyseg_noise ops against eager PyTorch and torch.compile (installed as pyseg_noise.benchmarks).

``main(argv)`` is the command line (``python -m benchmarks``, ``pyseg-noise bench``);
the ``bench_*.py`` files also run as pytest-benchmark tests (``python -m pytest benchmarks/``).
"""


def main(argv=None) -> int:
    """Runs ``python -m benchmarks`` with ``argv`` (see ``--help``); returns the exit status."""
    from .cli import main as _main  # imported on call: `import pyseg_noise.benchmarks` stays light

    return _main(argv)


__all__ = ["main"]
