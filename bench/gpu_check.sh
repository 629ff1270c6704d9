#!/bin/bash
# Build the Mamba2 kernels and check them against the plain-PyTorch refs on a GPU machine.
# Run from the repo root on the GPU box with the git-ignored .gpu/ folder carried along (run tool:
# carry=[".gpu"]; it holds build-mamba-kernels.sh and the mamba-ssm / causal-conv1d sdists):
#   bash bench/gpu_check.sh
# Measured kernel-vs-ref errors land in $OUT/kernel_errors.json (OUT defaults to ./gpu-check-out).
# The build takes ~6 min on 16 cores (causal-conv1d dominates), so it and the tests fit one 10-min command.
set -uo pipefail
# A warm machine keeps /tmp/site between calls: build only when the kernels are not importable yet.
PYTHONPATH=/tmp/site python3 -c "import mamba_ssm, causal_conv1d" 2>/dev/null \
  || bash .gpu/build-mamba-kernels.sh .gpu /tmp/site || exit 1
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
python3 - <<'PY' | tee "$OUT/versions.txt"
import importlib, platform
import torch
print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda)
for name in ("triton", "mamba_ssm", "causal_conv1d"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as e:  # report, don't stop: the tests below say which import failed
        print(name, "NOT IMPORTABLE:", type(e).__name__, e)
print("gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
PY
M4V_TEST_OUT=$OUT python3 -m pytest -q -rs --noconftest -p no:cacheprovider -m cuda tests/model/test_kernels.py 2>&1 | tee "$OUT/pytest.txt"
rc=${PIPESTATUS[0]}
[ -f "$OUT/kernel_errors.json" ] && cat "$OUT/kernel_errors.json"
exit "$rc"
