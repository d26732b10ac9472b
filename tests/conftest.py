import os

import pytest
import torch

# Triton's interpreter must be switched on before triton is first imported:
# without a GPU it is the only way the Triton kernels can run (and be checked).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # the property tests skip themselves without hypothesis
    _hypothesis_settings = None
if _hypothesis_settings is not None:
    # CI (CI=true, as .ci/run and hosted runners set it) replays the same examples on every run,
    # so a red run is reproducible and a green one is not luck of the draw; no deadline, as a
    # shared runner's timing says nothing about the code. Elsewhere ("dev") hypothesis draws new
    # examples each run and replays its failures from its database. HYPOTHESIS_PROFILE overrides.
    _hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
    _hypothesis_settings.register_profile("dev")
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                                      or ("ci" if os.environ.get("CI", "").lower() not in ("", "0", "false") else "dev"))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``).

    Training tests compare runs bitwise or to rounding; one thread makes the float
    sums' order fixed and keeps them fast on a busy 2-core machine.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
