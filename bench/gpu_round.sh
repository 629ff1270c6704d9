#!/bin/bash
# One GPU call of the speed issues: kernels, the GPU-only tests, training-step variants, e2e variants.
#   run(command="bash bench/gpu_round.sh train", carry=[".gpu"])   # kernels + tests + training-step variants
#   run(command="bash bench/gpu_round.sh e2e", carry=[".gpu"])     # text -> MP4 variants, one process each
#   run(command="bash bench/gpu_round.sh steps", carry=[".gpu"])   # cached step per stage x attention backend
#   run(command="bash bench/gpu_round.sh vae", carry=[".gpu"])     # streaming VAE decode: tile size, layout
# Each variant runs in its own process (a crash cannot poison the rest), under its own timeout. Results land
# in $OUT (at most 8 files come back): *.jsonl (one JSON line per variant) and one log per part.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
if [ "${1:-train}" = train ] && [ ! -d .gpu ] && [ -f .train/mamba-triton-py.tgz ]; then
  # training needs only mamba-ssm's Triton code (see bench/train_tiny_gpu.sh): carry [".train"] instead
  mkdir -p /tmp/site && tar xzf .train/mamba-triton-py.tgz -C /tmp/site && echo "mamba-ssm Triton code only"
else
  bash .gpu/install-mamba-kernels.sh .gpu /tmp/site >"$OUT/install.log" 2>&1 || { tail -20 "$OUT/install.log"; exit 1; }
  tail -1 "$OUT/install.log"
fi
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

variant() {  # variant LOG TIMEOUT_S SCRIPT ARGS...: one process, its output appended to LOG, last line shown
  local log=$1 limit=$2; shift 2
  echo "=== $*" >>"$log"
  timeout "$limit" python3 "$@" >>"$log" 2>&1 || echo "FAILED (rc $?): $*" | tee -a "$log"
  tail -1 "$log"
}

case "${1:-train}" in
train)  # TRAIN_VARIANTS="opts;opts;..." overrides the list below
  if [ -n "${TRAIN_VARIANTS:-}" ]; then IFS=';' read -ra tlist <<<"$TRAIN_VARIANTS"; else
    tlist=("--backend triton" "--backend triton --layout all" "--backend triton --layout all --graph"
      "--backend ref --layout all --graph" "--backend triton --layout all --graph --compile")
  fi
  for v in "${tlist[@]}"; do
    # shellcheck disable=SC2086
    variant "$OUT/train_step.log" "${TRAIN_S:-150}" bench/train_step_bench.py $v --out "$OUT/train_step.jsonl"
  done
  ;;
vae)  # streaming VAE decode per option set; VAE_VARIANTS="opts;opts;..." overrides the list below
  if [ -n "${VAE_VARIANTS:-}" ]; then IFS=';' read -ra vlist <<<"$VAE_VARIANTS"; else
    vlist=("" "--tile-px 512" "--tile-px 768" "--tile-px 1280" "--tile-px 1280 --vae-cl"
      "--tile-px 1280 --vae-cl --cudnn-bench" "--tile-batch 4" "--vae-cl --cudnn-bench")
  fi
  for v in "${vlist[@]}"; do
    # shellcheck disable=SC2086
    variant "$OUT/vae.log" "${VAE_S:-120}" bench/vae_decode_bench.py --preset "${PRESET:-m4v-768p}" $v --out "$OUT/vae.jsonl"
  done
  ;;
steps)  # the cached step per stage x attention backend, eager and graphed
  variant "$OUT/cached_step.log" "${STEPS_S:-240}" bench/cached_step_bench.py --out "$OUT/cached_step.jsonl"
  ;;
tests)  # per-test timeout: a hang fails that test with its stack instead of eating the call
  timeout "${TESTS_S:-240}" python3 -m pytest -v -rs --tb=short --noconftest -p no:cacheprovider --timeout 60 -m cuda \
    tests/model/test_gpu_paths.py tests/model/test_kernels.py >"$OUT/pytest.txt" 2>&1
  echo "pytest rc $?"; grep -E "PASSED|FAILED|ERROR|SKIPPED|Timeout|passed|failed" "$OUT/pytest.txt" | tail -30
  ;;
e2e)
  FRAMES=${FRAMES:-121}
  # VARIANTS="preset:options;preset:options;..." overrides the list below
  if [ -n "${VARIANTS:-}" ]; then IFS=';' read -ra list <<<"$VARIANTS"; else
    list=("m4v-768p:" "attn-baseline:" "m4v-768p:--graphs --check 9" "m4v-768p:--graphs --overlap --check 9")
  fi
  for v in "${list[@]}"; do
    preset=${v%%:*} opts=${v#*:}
    # shellcheck disable=SC2086
    variant "$OUT/e2e.log" 300 bench/e2e_run.py --preset "$preset" --frames "$FRAMES" $opts --out "$OUT/e2e.jsonl"
  done
  ;;
esac
