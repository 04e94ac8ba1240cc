#!/usr/bin/env bash
# Set up the EasyDeL eSurge peer of the eSurge benchmark (issue 9) on a fresh Linux x86_64 machine.
#
# Needs: python3.11 (with the venv module), the PyPI registry. About 3 GB of disk (jax, torch
# CPU, ray, tensorstore, ...). The virtualenv lives outside the repository; the benchmark driver
# runs benchmarks/peers/easydel_peer.py with its interpreter.
#
#   bash benchmarks/peers/setup_easydel.sh            # -> /work/peers/easydel
#   PEER_VENV=/somewhere/easydel bash benchmarks/peers/setup_easydel.sh
#
# Pitfalls handled here:
# * EasyDeL only needs torch to read the Hugging Face safetensors into JAX. Installing the CPU
#   wheel of torch first keeps pip from resolving a CUDA build (several GB) later.
# * eSurge imports pillow (its multimodal manager) although the base package does not declare it.
# * On CPU, eSurge's default attention (ragged_page_attention_v3) is a TPU kernel; the peer
#   passes attn_mechanism="ragged_page_attention_v2" itself, nothing to install for that.
# * If PEER_VENV is not /work/peers/easydel, edit VENV_PYTHON in easydel_peer.py (server_command).
set -euo pipefail

PEER_VENV="${PEER_VENV:-/work/peers/easydel}"
EASYDEL_VERSION="0.3.0"
TORCH_VERSION="2.13.0"

python3.11 -m venv "$PEER_VENV"
"$PEER_VENV/bin/pip" install --upgrade pip
# A CPU torch: the local wheel where the machine has one, else the PyTorch CPU index.
TORCH_WHEEL="/opt/wheels/torch-${TORCH_VERSION}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
if [ -f "$TORCH_WHEEL" ]; then
    nice -n 19 "$PEER_VENV/bin/pip" install "$TORCH_WHEEL"
else
    nice -n 19 "$PEER_VENV/bin/pip" install "torch==${TORCH_VERSION}" \
        --index-url https://download.pytorch.org/whl/cpu
fi
nice -n 19 "$PEER_VENV/bin/pip" install "easydel==${EASYDEL_VERSION}" pillow

# Smoke test: imports and the JAX CPU backend.
JAX_PLATFORMS=cpu "$PEER_VENV/bin/python" -c \
    "import easydel, jax, PIL; print('easydel', easydel.__version__, 'jax', jax.__version__, jax.devices())"
