"""``python -m benchmarks`` (from the repository root) and ``python -m pyseg_noise.benchmarks``."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
