"""``python -m pyseg_noise ...`` is the ``pyseg-noise`` command line (what ``torchrun -m pyseg_noise`` runs)."""
import sys

from pyseg_noise.cli import main

sys.exit(main())
