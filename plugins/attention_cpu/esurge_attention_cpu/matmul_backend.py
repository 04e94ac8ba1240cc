"""The ``cpu`` matmul backend: weight products through the plugin's native kernels."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from esurge_attention_cpu.bf16_pair_matmul import (
    ACTIVATION_DTYPES,
    COLUMN_MULTIPLE,
    GATE_ACTIVATIONS,
    PACKED_BLOCK_COLUMNS,
    bf16_packed_gated_matmul,
    bf16_packed_matmul,
    bf16_pair_matmul,
    pack_bf16_weight,
    unpack_bf16_weight,
)
from esurge_attention_cpu.ffi_targets import (
    amx_tiles_usable,
    bf16_pairs_available,
    greedy_head_available,
    register_ffi_targets,
)
from esurge_attention_cpu.greedy_head import (
    GREEDY_MAX_K,
    GreedyScreen,
    bf16_greedy_head,
    pack_greedy_screen,
)
from esurge_attention_cpu.residual_norm import WEIGHT_DTYPES as NORM_WEIGHT_DTYPES
from esurge_attention_cpu.residual_norm import add_rms_norm
from esurge_attention_cpu.small_matmul import SUPPORTED_DTYPES, small_matmul
from esurge_core.matmul.backend import xla_matmul
from esurge_core.matmul.packed_weight import PackedWeight

#: Largest padded row count the kernel takes; bigger products stay with XLA. Measured on the
#: 2-core machine of docs/PERFORMANCE.md (SmolLM2, bf16 weights, median decode step,
#: benchmarks/decode_step_times.py): 1 / 4 / 8 sequences 10.0 / 13.3 / 18.9 ms against XLA's
#: 17.8 / 22.8 / 24.1 ms; with the limit raised to 32, the kernel lost at 16 and 32 rows
#: (33.5 vs 30.4 ms, 57.0 vs 43.9 ms).
DEFAULT_MAX_ROWS = 8
#: Up to this many padded rows the bf16 pair kernel takes every product it can. Above, it runs
#: only when at most PAIR_REAL_ROWS_FRACTION of the rows are real (decided in the step with
#: ``lax.cond``), else XLA's dot. Measured (same machine, 90 bf16 weight matrices of SmolLM2's
#: MLP shapes streamed from memory, docs/PERFORMANCE.md step 11): 64 rows 34-40 ms against
#: XLA's 59-66, 128 rows level (61 vs 60), 256 / 1024 rows 7% / 11% slower than XLA (each
#: item streams every row of x again; XLA blocks large products better). But XLA computes
#: every padded row and the kernel only the real ones, which wins for a bucket padded by more
#: than the difference (W4: 1024 real rows of a 2048-row bucket, 720 vs 494 tok/s).
DEFAULT_MAX_PAIR_ROWS = 128
PAIR_REAL_ROWS_FRACTION = 0.85
#: Name of the layout ``pack_weight`` stores (``pack_bf16_weight``'s).
PACKED_LAYOUT = "bf16_pairs_64"
#: Set to 0 to keep weights as loaded (the kernels then re-arrange them in every product).
PACK_WEIGHTS_ENV = "ESURGE_CPU_PACK_WEIGHTS"
#: Steps of at most this many padded rows (the smallest sequence bucket) take their greedy
#: tokens from ``bf16_greedy_head``; not where products of that many rows may run on the AMX
#: tile unit, whose sums the kernel does not reproduce.
GREEDY_HEAD_MAX_ROWS = 8
#: Products of this many real rows or more run on the AMX tile unit where it is usable
#: (``kMinRows`` in ``amx_tiles.h``).
AMX_MIN_ROWS = 8
#: Set to 0 to compute every greedy step's logits (no int8 screen of the LM head).
GREEDY_HEAD_ENV = "ESURGE_CPU_GREEDY_HEAD"
#: Set to 0 to leave each residual add and RMSNorm to XLA (no ``add_rms_norm`` kernel).
FUSED_NORMS_ENV = "ESURGE_CPU_FUSED_NORMS"


@dataclass(frozen=True)
class CPUMatmulBackend:
    """Weight products through the plugin's kernels where they beat XLA's dot; XLA the rest.

    * weights packed at load (``pack_weight``: bfloat16, N a multiple of 16, any CPU):
      ``bf16_packed_matmul`` at every size;
    * other weights, at most ``max_rows`` (padded) rows: ``small_matmul`` (any mix of
      float32 / bfloat16); bfloat16 weights on a CPU without AVX512-BF16 up to
      ``max_pair_rows`` rows (the LM head of a decode step);
    * more rows with bfloat16 weights, N a multiple of 16, on a CPU with AVX512-BF16:
      ``bf16_pair_matmul`` up to ``max_pair_rows`` padded rows (batched decode), and above
      when the real rows are at most ``PAIR_REAL_ROWS_FRACTION`` of them (chosen in the step;
      a full prefill bucket goes to XLA);
    * everything else: XLA.

    It also fuses a gated MLP's gate/up product with its activation (``gated_matmul``,
    ``bf16_packed_gated_matmul``) for packed weights on a CPU with AVX512-BF16, and gives the
    greedy tokens of small all-greedy steps from an int8 screen of the packed LM head
    (``greedy_head``, ``bf16_greedy_head``; AVX512-BF16 and AVX512-VNNI).

    Creating the backend builds the kernels for this machine if they are not cached yet, so a
    missing compiler is reported when the engine starts, not in the middle of tracing.
    """

    name: str = "cpu"
    packed_layout: str = PACKED_LAYOUT
    max_rows: int = DEFAULT_MAX_ROWS
    max_pair_rows: int = DEFAULT_MAX_PAIR_ROWS
    pack_weights: bool = field(default_factory=lambda: os.environ.get(PACK_WEIGHTS_ENV, "1") != "0")
    greedy_screen: bool = field(default_factory=lambda: os.environ.get(GREEDY_HEAD_ENV, "1") != "0")
    fused_norms: bool = field(default_factory=lambda: os.environ.get(FUSED_NORMS_ENV, "1") != "0")
    bf16_pairs: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        register_ffi_targets()
        object.__setattr__(self, "bf16_pairs", bf16_pairs_available())
        object.__setattr__(self, "greedy_screen", self.greedy_screen and greedy_head_available())

    def packs_weight(self, w) -> bool:
        """Whether ``pack_weight`` packs a weight of ``w``'s shape and dtype."""
        return (
            self.pack_weights
            and len(w.shape) == 2
            and jnp.dtype(w.dtype).name == "bfloat16"
            and w.shape[1] % COLUMN_MULTIPLE == 0
        )

    def pack_weight(self, w: jax.Array) -> PackedWeight | None:
        """``w`` (``[K, N]``) in the packed kernel's layout, where that kernel can take it."""
        if not self.packs_weight(w):
            return None
        return PackedWeight(_pack(w), tuple(w.shape), w.dtype, PACKED_LAYOUT, unpack_bf16_weight)

    # ------------------------------------------- residual add + RMSNorm (models.norms)

    def takes_add_rms_norm(self, x, weight) -> bool:
        """Whether ``add_rms_norm`` takes float32 rows ``x [M, K]`` with ``weight [K]``."""
        return (
            self.fused_norms
            and len(x.shape) == 2
            and jnp.dtype(x.dtype).name == "float32"
            and tuple(weight.shape) == (x.shape[1],)
            and jnp.dtype(weight.dtype).name in NORM_WEIGHT_DTYPES
        )

    def add_rms_norm(self, x, delta, weight, eps: float):
        """``(x + delta, rms_norm(x + delta, weight, eps))`` in one native call."""
        return add_rms_norm(x, delta, weight, eps)

    # ------------------------------------------------------ greedy tokens (matmul.greedy_head)

    def greedy_head_bytes(self, head) -> int:
        """Bytes of ``pack_greedy_head``'s screen for a ``[K, N]`` head (0: none)."""
        k, n = head.shape
        if not (self.greedy_screen and self.packs_weight(head)):
            return 0
        if n % PACKED_BLOCK_COLUMNS or k > GREEDY_MAX_K:
            return 0
        return 2 * (-(-k // 2)) * n + 3 * 4 * n

    def pack_greedy_head(self, head: PackedWeight) -> GreedyScreen | None:
        """The int8 screen of a head this backend packed (``greedy_head.pack_greedy_screen``)."""
        if not self.greedy_screen or head.layout != PACKED_LAYOUT:
            return None
        return pack_greedy_screen(head.data, head.shape)

    def takes_greedy_head(self, rows: int) -> bool:
        """Whether a step of ``rows`` padded rows takes its greedy tokens from the screen."""
        limit = AMX_MIN_ROWS - 1 if amx_tiles_usable() else GREEDY_HEAD_MAX_ROWS
        return self.greedy_screen and rows <= limit

    def greedy_head(self, x, head: PackedWeight, screen: GreedyScreen, num_rows) -> jax.Array:
        """Each real row's greedy token of ``x @ head`` (``bf16_greedy_head``)."""
        return bf16_greedy_head(x, head.data, screen, num_rows)

    # ------------------------------------------------------------------------ products

    def handles(self, x, w, *, transpose_w: bool, out_dtype) -> bool:
        if len(x.shape) != 2 or len(w.shape) != 2:
            return False
        if isinstance(w, PackedWeight):  # ours: ``_packed_matmul`` takes every row count
            return all(jnp.dtype(d).name in ACTIVATION_DTYPES for d in (x.dtype, out_dtype))
        if x.shape[0] <= self._small_rows_limit(w):
            dtypes = (x.dtype, w.dtype, out_dtype)
            return all(jnp.dtype(d).name in SUPPORTED_DTYPES for d in dtypes)
        return self._takes_bf16_pairs(x, w, transpose_w=transpose_w, out_dtype=out_dtype)

    def _small_rows_limit(self, w) -> int:
        """Most padded rows ``small_matmul`` takes with (unpacked) weights ``w``.

        ``max_rows``; but for bfloat16 weights on a CPU without AVX512-BF16 ``max_pair_rows``:
        there XLA's bf16 dot is slow, and for the tied LM head (49152 x 576) of a decode step
        it also faulted 200 MB of pages in every step (2-core Zen 3, SmolLM2 decode step at
        16 / 64 sequences: 250 / 431 ms through XLA, 91 / 305 ms through the kernel).
        """
        if not self.bf16_pairs and jnp.dtype(w.dtype).name == "bfloat16":
            return max(self.max_rows, self.max_pair_rows)
        return self.max_rows

    def _takes_bf16_pairs(self, x, w, *, transpose_w: bool, out_dtype) -> bool:
        n = w.shape[0] if transpose_w else w.shape[1]
        return (
            self.bf16_pairs
            and jnp.dtype(w.dtype).name == "bfloat16"
            and n % COLUMN_MULTIPLE == 0
            and all(jnp.dtype(d).name in ACTIVATION_DTYPES for d in (x.dtype, out_dtype))
        )

    def matmul(self, x, w, num_rows, *, transpose_w: bool, out_dtype) -> jax.Array:
        if isinstance(w, PackedWeight):
            return self._packed_matmul(x, w, num_rows, out_dtype=out_dtype)
        if x.shape[0] <= self._small_rows_limit(w):
            return small_matmul(x, w, num_rows, transpose_w=transpose_w, out_dtype=out_dtype)

        def pair(x, w, num_rows):
            return bf16_pair_matmul(x, w, num_rows, transpose_w=transpose_w, out_dtype=out_dtype)

        if x.shape[0] <= self.max_pair_rows:
            return pair(x, w, num_rows)

        def xla(x, w, num_rows):
            return xla_matmul(x, w, transpose_w=transpose_w, out_dtype=out_dtype)

        mostly_padding = num_rows <= int(PAIR_REAL_ROWS_FRACTION * x.shape[0])
        return jax.lax.cond(mostly_padding, pair, xla, x, w, jnp.asarray(num_rows, jnp.int32))

    def handles_gated(self, x, w, *, activation: str, out_dtype) -> bool:
        """Whether ``gated_matmul`` computes this fused gate/up product: weights this backend
        packed, an activation the kernel has, halves of whole packed blocks, AVX512-BF16."""
        return (
            self.bf16_pairs
            and isinstance(w, PackedWeight)
            and w.layout == PACKED_LAYOUT
            and len(x.shape) == 2
            and activation in GATE_ACTIVATIONS
            and w.shape[1] % (2 * PACKED_BLOCK_COLUMNS) == 0
            and all(jnp.dtype(d).name in ACTIVATION_DTYPES for d in (x.dtype, out_dtype))
        )

    def gated_matmul(
        self, x, w: PackedWeight, num_rows, *, activation: str, out_dtype
    ) -> jax.Array:
        # Measured in a 2048-token prefill step on the Intel kind (docs/PERFORMANCE.md step
        # 35): the product writes half the columns, and XLA's pass over both halves is gone.
        return bf16_packed_gated_matmul(
            x, w.data, num_rows, n=w.shape[1], activation=activation, out_dtype=out_dtype
        )

    def _packed_matmul(self, x, w: PackedWeight, num_rows, *, out_dtype) -> jax.Array:
        # Every size: with AVX512-BF16 the kernel beat XLA's bf16 dot at every row count
        # measured after step 29 (2-core Zen 4, 30 chained products of 576 x 1536, malloc
        # tuned: 1.2-1.4x from 256 to 2048 rows, 1.3-1.9x below; a 2048-token prefill step in
        # the engine 3-5% faster, step 30), and without it the portable variant did (2-core
        # Zen 3, 1 to 2048 rows, 1.2-20x).
        return bf16_packed_matmul(x, w.data, num_rows, n=w.shape[1], out_dtype=out_dtype)


_pack = jax.jit(pack_bf16_weight)
