#!/usr/bin/env bash
# Runs the C++ kernels' op tests under AddressSanitizer + UndefinedBehaviorSanitizer.
# Builds a separate copy of the extension (PYSEG_NOISE_SANITIZE=1) in a temporary
# tree, so the normal build is untouched. Usage: bash scripts/sanitize.sh [pytest args]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/pyseg-sanitize.XXXXXX)
trap 'rm -rf "$work"' EXIT
git -C "$root" ls-files -z | (cd "$root" && xargs -0 cp --parents -t "$work")
cd "$work"
PYSEG_NOISE_SANITIZE=1 python3 setup.py -q build_ext --inplace >/dev/null
asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
# Python itself "leaks" at exit: leak detection off; everything else aborts the run.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# pyseg_noise.kernels maps to kernels/: put the tree first and alias it for the test run.
export PYTHONPATH="$work"
LD_PRELOAD="$asan $ubsan" python3 -c "import pyseg_noise.ops as o; assert o.HAS_CPU_EXTENSION; print('sanitized extension loaded')"
LD_PRELOAD="$asan $ubsan" python3 -m pytest -q -p no:cacheprovider "${@:-tests/ops}" -k "not triton and not compile and not grow_memory"  # ASan quarantine grows RSS by design
