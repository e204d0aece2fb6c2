#!/bin/bash
# One device-tool call on a GPU machine (see README.md beside this): the GPU's facts, then
# dev/cuda/validate.py (build, GPU tests, checks at size, timings against cuBLAS / cuDNN / PyTorch),
# then `pydl bench --device cuda` (every op with a cuda kernel beside PyTorch on the GPU), each under
# its own time limit so that a slow stage cannot eat the others' time. Everything lands in $OUT
# (at most 8 files: the device tool brings back no more); the validation table is printed last.
#
#   bash dev/cuda/device_run.sh                 # everything
#   VALIDATE_ARGS="--quick" bash dev/cuda/device_run.sh
#   VALIDATE_S=300 BENCH_S=0 bash dev/cuda/device_run.sh   # no pydl bench
#   NCU_S=90 bash dev/cuda/device_run.sh        # and Nsight Compute on the main kernels
set -u
OUT=${OUT:-$PWD/cuda_validate_out}
export OUT PYTHONUNBUFFERED=1
mkdir -p "$OUT"
PY=${PY:-python3}
VALIDATE_S=${VALIDATE_S:-330}
BENCH_S=${BENCH_S:-120}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit,temperature.gpu \
    --format=csv
  $PY -c "import sys, numpy, cupy, torch; print('python', sys.version.split()[0], 'numpy', numpy.__version__,
          'cupy', cupy.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda,
          'cudnn', torch.backends.cudnn.version())"
  nvcc --version | tail -1
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# shellcheck disable=SC2086
timeout "$VALIDATE_S" $PY dev/cuda/validate.py ${VALIDATE_ARGS:-} > "$OUT/validate.log" 2>&1
echo "validate.py: exit $? ($(grep -c '^FAIL' "$OUT/validate.log") FAIL lines)"

if [ "$BENCH_S" -gt 0 ]; then
  timeout "$BENCH_S" $PY -m pydl.cli bench --device cuda --quick --backends cuda,torch ${BENCH_ARGS:-} \
    --out /tmp/pydl-bench-cuda > "$OUT/bench.log" 2>&1
  echo "pydl bench --device cuda: exit $?"
  cp /tmp/pydl-bench-cuda/results.json "$OUT/bench_results.json" 2>/dev/null
  cp /tmp/pydl-bench-cuda/report.md "$OUT/bench_report.md" 2>/dev/null
  tail -c 1500 "$OUT/bench.log"
fi

# Nsight Compute on one launch of each kernel of interest (dev/cuda/profile_kernels.py): what bounds it
if [ "${NCU_S:-0}" -gt 0 ] && command -v ncu >/dev/null 2>&1; then
  timeout "$NCU_S" ncu --clock-control none --launch-count "${NCU_LAUNCHES:-6}" \
    -k 'regex:gemm_simt|gemm_bf16_tc|im2col|max_pool2d|elementwise_relu_f32' \
    --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats \
    --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
    $PY dev/cuda/profile_kernels.py ${NCU_GROUPS:-} > "$OUT/ncu.txt" 2>&1
  echo "ncu: exit $?"
fi
cat "$OUT/bench.log" >> "$OUT/env.txt" 2>/dev/null && rm -f "$OUT/bench.log"  # at most 8 files come back

grep -E '^(FAIL|!!)' "$OUT/validate.log" | head -40
tail -n 30 "$OUT/pytest.txt" 2>/dev/null
cat "$OUT/cuda_validate.md" 2>/dev/null
