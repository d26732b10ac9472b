#!/usr/bin/env bash
# The checks that need a real NVIDIA GPU, in one run of at most 8 minutes:
#
#   1. tests   the Triton kernels compiled and launched on CUDA: tests/kernels and the
#              Triton cases of tests/ops (forward, gradients vs the float64 reference,
#              checks inside the kernels, opcheck, torch.compile)          (<= 240 s)
#   2. bench   the op benchmarks at paper size on CUDA, Triton vs eager and the
#              achieved bandwidth against a copy kernel (python -m benchmarks) (<= 120 s)
#   3. train   a 200-step PINT training on synthetic data, CUDA + bf16 AMP:
#              150 pixel-wise + 50 image-level steps, so both loss ops run   (<= 100 s)
#
# Usage (from the repository root, after `pip install --no-build-isolation -e .`):
#   scripts/gpu_check.sh [OUT]          # OUT defaults to results/gpu_check
# Each stage has its own time limit and log under OUT; the summary (OUT/summary.txt)
# names every stage with its exit status and seconds. Exit status: 0 when all passed.
set -u

OUT=${1:-results/gpu_check}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
FAILED=0

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to torch; nothing to check" | tee -a "$SUMMARY"
    exit 2
fi
python - <<'EOF' | tee -a "$SUMMARY"
import torch, triton
p = torch.cuda.get_device_properties(0)
print(f"device: {p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, "
      f"triton {triton.__version__}")
EOF

# stage NAME LIMIT_S COMMAND...: run COMMAND with a time limit, log to OUT/NAME.log
stage() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "== $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    local took=$((SECONDS - start))
    tail -n 5 "$OUT/$name.log"
    if [ $rc -eq 0 ]; then
        echo "$name: ok (${took}s)" | tee -a "$SUMMARY"
    else
        [ $rc -eq 124 ] && note="timed out" || note="failed"
        echo "$name: $note, exit $rc (${took}s), see $OUT/$name.log" | tee -a "$SUMMARY"
        FAILED=1
    fi
}

# 1. Kernels on CUDA. TRITON_INTERPRET must be unset: the kernels compile for this GPU.
# tests/kernels runs every launcher on cuda; in tests/ops only the Triton cases (the C++ and
# reference cases are CPU-only and run in CI). -n 8: compiles spread over 8 worker processes.
XDIST=""
python -c "import xdist" 2>/dev/null && XDIST="-n 8"
stage tests 240 env -u TRITON_INTERPRET bash -c "
    python -m pytest -q $XDIST -p no:cacheprovider tests/kernels &&
    python -m pytest -q $XDIST -p no:cacheprovider tests/ops -k triton"

# 2. Benchmarks at paper size on CUDA: Triton against the eager reference; results.md has the
# bandwidth of each row as a share of a device-to-device copy.
stage bench 120 python -m benchmarks --device cuda --sizes paper --ops pint,tsman,ema \
    --providers triton,reference --repeats 10 --warmup 3 --no-plot --out "$OUT/bench"

# 3. A short PINT training on CUDA with bf16 AMP (synthetic LA-like volumes, 4 training cases).
stage train 100 bash -c "
    pyseg-noise synth '$OUT/data' --n-train 4 --n-test 1 --shape 112 112 80 --overwrite &&
    pyseg-noise train pint --data '$OUT/data' --out '$OUT/run' --device cuda --amp bf16 \
        --set iterations=150 --set method_options.image_phase_iterations=50 --no-progress --overwrite"

echo "== summary ($SUMMARY)"
cat "$SUMMARY"
exit $FAILED
