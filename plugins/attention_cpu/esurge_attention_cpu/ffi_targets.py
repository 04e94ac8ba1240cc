"""Load the plugin's native library once per process and register its XLA FFI targets."""

from __future__ import annotations

import ctypes
import threading

import jax

from esurge_attention_cpu.native_build import build_library

RAGGED_PAGED_ATTENTION = "esurge_cpu_ragged_paged_attention"
WRITE_KV_PAGES = "esurge_cpu_write_kv_pages"
SMALL_MATMUL = "esurge_cpu_small_matmul"
BF16_PAIR_MATMUL = "esurge_cpu_bf16_pair_matmul"
BF16_PACKED_MATMUL = "esurge_cpu_bf16_packed_matmul"
BF16_PACKED_GATED_MATMUL = "esurge_cpu_bf16_packed_gated_matmul"
BF16_GREEDY_HEAD = "esurge_cpu_bf16_greedy_head"
ADD_RMS_NORM = "esurge_cpu_add_rms_norm"
#: FFI target name -> exported handler symbol of the library.
_HANDLERS = {
    RAGGED_PAGED_ATTENTION: "EsurgeRaggedPagedAttention",
    WRITE_KV_PAGES: "EsurgeWriteKVPages",
    SMALL_MATMUL: "EsurgeSmallMatmul",
    BF16_PAIR_MATMUL: "EsurgeBf16PairMatmul",
    BF16_PACKED_MATMUL: "EsurgeBf16PackedMatmul",
    BF16_PACKED_GATED_MATMUL: "EsurgeBf16PackedGatedMatmul",
    BF16_GREEDY_HEAD: "EsurgeBf16GreedyHead",
    ADD_RMS_NORM: "EsurgeAddRmsNorm",
}
_lock = threading.Lock()
_library: ctypes.CDLL | None = None


def register_ffi_targets() -> None:
    """Build (once per machine) and load the library, and register every kernel in it.

    Raises:
        NativeBuildError: the kernels could not be compiled on this machine.
    """
    global _library
    with _lock:
        if _library is not None:
            return
        library = ctypes.cdll.LoadLibrary(str(build_library()))
        for target, symbol in _HANDLERS.items():
            jax.ffi.register_ffi_target(
                target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu"
            )
        _library = library


def bf16_pairs_available() -> bool:
    """Whether the library was built with AVX512-BF16 (``bf16_pair_matmul`` can run here).

    Raises:
        NativeBuildError: the kernels could not be compiled on this machine.
    """
    register_ffi_targets()
    assert _library is not None
    return bool(_library.EsurgeBf16PairMatmulAvailable())


def greedy_head_available() -> bool:
    """Whether the library was built with AVX512-BF16 and AVX512-VNNI (``bf16_greedy_head``
    can run here).

    Raises:
        NativeBuildError: the kernels could not be compiled on this machine.
    """
    register_ffi_targets()
    assert _library is not None
    return bool(_library.EsurgeGreedyHeadAvailable())


def amx_tiles_usable() -> bool:
    """Whether the bf16 weight products of 8 rows or more run on the AMX tile unit here.

    True on a CPU with AMX-BF16 whose kernel grants this process the tile state, unless
    ``ESURGE_CPU_AMX=0`` (read once per process, when a product first asks).

    Raises:
        NativeBuildError: the kernels could not be compiled on this machine.
    """
    register_ffi_targets()
    assert _library is not None
    return bool(_library.EsurgeAmxTilesUsable())
