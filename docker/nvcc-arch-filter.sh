#!/bin/bash
# nvcc wrapper for the worker image's build stage: drops every -gencode target whose compute capability is not
# in TORCH_CUDA_ARCH_LIST ("8.0;9.0" -> 80, 90), then runs the real nvcc.
# Why: mamba-ssm's and causal-conv1d's setup.py hard-code about nine -gencode targets and ignore
# TORCH_CUDA_ARCH_LIST, which multiplies the build time (tens of minutes per extra target).
# Handles "-gencode arch=compute_90,code=sm_90", "-gencode=arch=..." and "--generate-code ..." forms.
set -euo pipefail
REAL_NVCC=${REAL_NVCC:-"$(dirname "$(readlink -f "$0")")/nvcc.real"}
ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0"}

keep=" "
for a in ${ARCH_LIST//;/ }; do
  a=${a%%+PTX}
  keep+="${a//./} "
done

wanted() {  # $1: "arch=compute_90a,code=sm_90a" -> is 90 in the list?
  local cc
  cc=$(sed -n 's/.*compute_\([0-9]\+\).*/\1/p' <<<"$1")
  [[ -n $cc && $keep == *" $cc "* ]]
}

args=()
dropped=0
kept=0
next=""
for a in "$@"; do
  if [[ -n $next ]]; then
    if wanted "$a"; then args+=("$next" "$a"); kept=$((kept + 1)); else dropped=$((dropped + 1)); fi
    next=""
    continue
  fi
  case "$a" in
    -gencode | --generate-code) next=$a ;;
    -gencode=* | --generate-code=*)
      if wanted "${a#*=}"; then args+=("$a"); kept=$((kept + 1)); else dropped=$((dropped + 1)); fi ;;
    *) args+=("$a") ;;
  esac
done
if ((dropped > 0 && kept == 0)); then
  echo "nvcc-arch-filter: every -gencode target dropped; TORCH_CUDA_ARCH_LIST=$ARCH_LIST matches none" >&2
  exit 2
fi
exec "$REAL_NVCC" "${args[@]}"
