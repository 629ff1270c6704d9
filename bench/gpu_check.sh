#!/bin/bash
# Install the Mamba2 kernels and check them against the plain-PyTorch refs on a GPU machine.
# Run from the repo root on the GPU box with the git-ignored .gpu/ folder carried along (run tool:
# carry=[".gpu"]; .gpu/ is a copy of the shared gpu folder: install-mamba-kernels.sh, the prebuilt
# sm_90 set and the sdists):
#   bash bench/gpu_check.sh
# Measured kernel-vs-ref errors land in $OUT/kernel_errors.json (OUT defaults to ./gpu-check-out).
# install-mamba-kernels.sh unpacks the prebuilt set in about a minute when it matches the machine's torch,
# Python and CUDA (else it builds from the sdists, ~7 min); it returns at once on a warm machine.
set -uo pipefail
bash .gpu/install-mamba-kernels.sh .gpu /tmp/site || exit 1
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
M4V_TEST_OUT=$OUT timeout 300 python3 -m pytest -q -rs --tb=short --noconftest -p no:cacheprovider -m cuda \
  tests/model/test_kernels.py tests/model/test_gpu_paths.py 2>&1 | tee "$OUT/pytest.txt"
rc=${PIPESTATUS[0]}
[ -f "$OUT/kernel_errors.json" ] && cat "$OUT/kernel_errors.json"
exit "$rc"
