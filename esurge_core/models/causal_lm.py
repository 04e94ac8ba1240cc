"""The interface every eSurge model implements (contract D), with its shared behaviour.

A model object is built once from a Hugging Face config dict and a dtype. It holds no
weights: `load_params` turns checkpoint tensors into a params pytree, and `forward` /
`compute_logits` are pure functions of (params, kv caches, inputs), so the runner can
`jax.jit` them with the model object and attention backend closed over (static) and the KV
caches donated.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from esurge_core.attention.metadata import AttentionMetadata
from esurge_core.kv_cache.groups import KVCacheGroupSpec
from esurge_core.matmul.dispatch import matmul
from esurge_core.models.attention_pattern import LayerAttention, group_layers
from esurge_core.models.hf_config import architecture_of, config_value, head_dim_of
from esurge_core.models.paged_attention import AttentionKernels
from esurge_core.models.params import (
    ParamPath,
    ParamSpec,
    linear_spec,
    load_from_specs,
    tree_from_specs,
)
from esurge_core.models.transformer_blocks import AttentionShape
from esurge_core.weights.errors import UnsupportedConfigError

SUPPORTED_DTYPES = ("float32", "bfloat16")


def canonical_dtype(dtype: Any) -> jnp.dtype:
    """Return the numpy dtype of `dtype` ("float32", jnp.bfloat16, ...) if it is supported.

    Raises:
        UnsupportedConfigError: the dtype is not float32 or bfloat16.
    """
    resolved = jnp.dtype(dtype)
    if resolved.name not in SUPPORTED_DTYPES:
        raise UnsupportedConfigError(
            f"model dtype {resolved.name!r} is not supported; supported: {list(SUPPORTED_DTYPES)}"
        )
    return resolved


class CausalLM(ABC):
    """A decoder-only language model over a paged KV cache.

    Subclasses set up their config-derived fields in `__init__` (calling `super().__init__`
    first) and implement `layer_attention`, `param_specs` and `forward`.

    Attributes:
        config: The Hugging Face config dict the model was built from.
        architecture: `config["architectures"][0]`.
        dtype: Activation and KV-cache dtype (and parameter dtype unless
            `set_param_dtype` changes it).
        vocab_size, hidden_size, num_layers, num_heads, num_kv_heads, head_dim, rms_norm_eps:
            Sizes read from the config.
        tie_word_embeddings: Whether the output projection reuses the token embedding.
        final_logit_softcap: Optional tanh soft cap on the logits (Gemma).
    """

    def __init__(self, config: Mapping[str, Any], dtype: Any) -> None:
        self.config = dict(config)
        self.architecture = architecture_of(config)
        self.dtype = canonical_dtype(dtype)
        self.param_dtype = self.dtype
        self.vocab_size = int(config_value(config, "vocab_size"))
        self.hidden_size = int(config_value(config, "hidden_size"))
        self.num_layers = int(config_value(config, "num_hidden_layers"))
        self.num_heads = int(config_value(config, "num_attention_heads"))
        self.num_kv_heads = int(config_value(config, "num_key_value_heads", self.num_heads))
        self.head_dim = head_dim_of(config)
        self.rms_norm_eps = float(config_value(config, "rms_norm_eps", 1e-6))
        self.max_position_embeddings = int(config_value(config, "max_position_embeddings", 8192))
        self.tie_word_embeddings = bool(config_value(config, "tie_word_embeddings", False))
        self.final_logit_softcap: float | None = None
        if self.num_heads % self.num_kv_heads:
            raise UnsupportedConfigError(
                f"num_attention_heads={self.num_heads} is not a multiple of "
                f"num_key_value_heads={self.num_kv_heads}"
            )
        self.attention_shape = AttentionShape(
            self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim
        )

    # ----- attention layout and KV cache -------------------------------------------------

    @abstractmethod
    def layer_attention(self) -> Sequence[LayerAttention]:
        """Return the attention pattern of each decoder layer, in layer order."""

    def kv_cache_groups(self) -> list[KVCacheGroupSpec]:
        """Return the KV-cache groups (contract C), in the order of `metadata.page_indices`."""
        return group_layers(self.layer_attention())[0]

    def layer_groups(self) -> tuple[int, ...]:
        """Return, for each layer, the index of its KV-cache group."""
        return group_layers(self.layer_attention())[1]

    def kv_cache_shape(self, num_pages: int, page_size: int) -> tuple[int, int, int, int]:
        """Shape of one layer's cache: [num_pages, page_size, 2 * num_kv_heads, head_dim]."""
        return (num_pages, page_size, 2 * self.num_kv_heads, self.head_dim)

    def init_kv_caches(
        self, num_pages: int, page_size: int, dtype: Any = None
    ) -> tuple[jax.Array, ...]:
        """Allocate zeroed caches, one per layer, in ``dtype`` (default: the model dtype)."""
        shape = self.kv_cache_shape(num_pages, page_size)
        dtype = self.dtype if dtype is None else canonical_dtype(dtype)
        return tuple(jnp.zeros(shape, dtype) for _ in range(self.num_layers))

    # ----- parameters ----------------------------------------------------------------------

    def set_param_dtype(self, dtype: Any) -> None:
        """Store the parameters in ``dtype`` (call before `load_params`).

        E.g. bfloat16 weights with float32 activations: every matrix product takes bf16
        inputs and accumulates in fp32 (``esurge_core.matmul.dispatch.matmul``); norms, RoPE,
        the residual stream and the KV cache stay in the activation dtype.
        """
        self.param_dtype = canonical_dtype(dtype)

    @abstractmethod
    def param_specs(self) -> list[ParamSpec]:
        """Return every parameter's spec (checkpoint name, shape, logical axes, layout)."""

    def embedding_specs(self) -> list[ParamSpec]:
        """Specs of the token embedding, the final norm and (unless tied) the LM head."""
        v, d = self.vocab_size, self.hidden_size
        specs = [
            ParamSpec(("embed_tokens",), "model.embed_tokens.weight", (v, d), ("vocab", "embed")),
            ParamSpec(("final_norm",), "model.norm.weight", (d,), ("norm",)),
        ]
        if not self.tie_word_embeddings:
            specs.append(linear_spec(("lm_head",), "lm_head.weight", d, v, ("embed", "vocab")))
        return specs

    def matmul_weight_paths(self) -> list[ParamPath]:
        """Paths of the params the model multiplies only through ``matmul`` ([in, out])."""
        return [spec.path for spec in self.param_specs() if spec.matmul_weight]

    def tied_lm_head_paths(self) -> tuple[ParamPath, ParamPath] | None:
        """``(embedding, head)`` paths where the LM head is the tied token embedding, else None.

        A matmul backend that packs weights stores its packing of the transposed embedding at
        the head path (``pack_matmul_weights``); ``compute_logits`` then multiplies by it.
        """
        return (("embed_tokens",), ("lm_head",)) if self.tie_word_embeddings else None

    def logical_axes(self) -> dict:
        """Return a pytree parallel to the params whose leaves are logical-axis tuples.

        Use with `jax.tree.map(fn, params, model.logical_axes())` (the tuples sit where the
        params' arrays are) to build shardings, e.g. `NamedSharding(mesh, P(*rules(axes)))`.
        """
        return tree_from_specs(self.param_specs(), lambda spec: spec.axes)

    def load_params(self, tensors: Mapping[str, Any], *, progress: bool = True) -> dict:
        """Build the params pytree from Hugging Face-named tensors, checking every shape.

        Args:
            tensors: Name -> array (numpy or memory-mapped). Extra tensors are ignored.
            progress: Show a tqdm progress bar.

        Raises:
            MissingTensorError: a needed tensor is absent; names it.
            TensorShapeError: a tensor's shape disagrees with the config; names it.
        """
        return load_from_specs(
            self.param_specs(), tensors, self.param_dtype, self.architecture, progress=progress
        )

    # ----- compute -------------------------------------------------------------------------

    @abstractmethod
    def forward(
        self,
        params: dict,
        kv_caches: tuple[jax.Array, ...],
        input_ids: jax.Array,
        positions: jax.Array,
        metadata: AttentionMetadata,
        attention: AttentionKernels,
    ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """Run the decoder over a packed ragged batch.

        Args:
            params: From `load_params`.
            kv_caches: One cache per layer, [num_pages, page_size, 2 * kv_heads, head_dim].
            input_ids: int32[T] packed tokens of all sequences (padded at the end).
            positions: int32[T] position of each token in its sequence.
            metadata: Page tables and sequence boundaries of the step.
            attention: The attention backend (static under jit).

        Returns:
            The final-normed hidden states [T, hidden] (model dtype) and the updated caches.
        """

    def plain_lm_head(self, params: dict):
        """The ``[hidden, vocab]`` weight whose product with the hidden rows *is* the logits
        (``params["lm_head"]``: untied, or the packed copy of a tied embedding), or ``None``
        where ``compute_logits`` does more (a soft cap) or multiplies the embedding itself."""
        if self.final_logit_softcap is not None or "lm_head" not in params:
            return None
        return params["lm_head"]

    def compute_logits(self, params: dict, hidden_rows: jax.Array) -> jax.Array:
        """Return float32[N, vocab] logits for hidden rows [N, hidden] (float32 accumulation)."""
        if "lm_head" in params:  # untied, or tied with a packed copy (tied_lm_head_paths)
            weight, transpose = params["lm_head"], False
        else:
            weight, transpose = params["embed_tokens"], True
        logits = matmul(hidden_rows, weight, transpose_w=transpose, out_dtype=jnp.float32)
        if self.final_logit_softcap is not None:
            cap = np.float32(self.final_logit_softcap)
            logits = cap * jnp.tanh(logits / cap)
        return logits
