#!/usr/bin/env bash
# On a GPU machine with torch (and torchvision, timm, transformers, onnxruntime) but without the project's
# other packages: install the wheels `scripts/gpu_check.py prepare` put in .gpu/wheels, then run the check on
# the data it put in .gpu/data. Results (gpu_check.json, gpu_check.md) go to $OUT, else ./gpu-check.
# Extra arguments go to `gpu_check.py run` (e.g. --real-epochs 4).
set -uo pipefail
cd "$(dirname "$0")/.."
SITE="$(mktemp -d)"  # the carried wheels, installed beside the image's packages, not over them
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    .gpu/wheels/*.whl || { echo "gpu_check.sh: cannot install .gpu/wheels; run scripts/gpu_check.py prepare first"; exit 2; }
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 scripts/gpu_check.py run --data .gpu/data --out "${OUT:-gpu-check}" "$@"
