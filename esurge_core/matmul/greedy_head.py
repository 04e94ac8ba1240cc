"""The greedy tokens of a step straight from the hidden rows, where a matmul backend can
find the LM head's argmax without computing every logit.

A batch-1 decode step streams all its weights from memory, and a small model's LM head is a
large part of them (SmolLM2-135M: 57 of 269 MB). A backend may offer to find each row's
greedy token reading less than that (the ``cpu`` backend screens an int8 copy of the head and
computes exactly only the columns the screen cannot rule out). It then defines:

* ``pack_greedy_head(head: PackedWeight) -> pytree | None``: its extra data for the head it
  packed (called once at load; ``None``: not for this head);
* ``greedy_head_bytes(head: jax.ShapeDtypeStruct) -> int``: that data's size for a
  ``[K, N]`` head (0 where it would not pack it), to size memory before packing;
* ``takes_greedy_head(rows: int) -> bool``: whether it takes a step of ``rows`` padded rows;
* ``greedy_head(x, head, data, num_rows) -> int32[M]``: the first index of the largest of
  ``matmul(x, head)``'s fp32 logits for the first ``num_rows`` rows, bitwise what the
  engine's argmax (``first_argmax``) of those logits gives.

The model runner uses it for a step only where the outcome cannot differ from computing the
logits and sampling: the built-in sampler, every row greedy (decided in the step), no
penalties, logit bias or log-probabilities (static), and logits that are the head's product
alone (``CausalLM.plain_lm_head``).
"""

from __future__ import annotations

from typing import Any

import jax

from esurge_core.matmul.backend import MatmulBackend
from esurge_core.matmul.packed_weight import PackedWeight
from esurge_core.sampling.batch import NO_LOGPROBS, SamplingBatch

__all__ = ["GREEDY_HEAD_KEY", "add_greedy_head", "greedy_head_bytes", "greedy_head_fn"]

#: Where the backend's data for the head sits in the params (beside ``lm_head``).
GREEDY_HEAD_KEY = "lm_head_greedy"


def _offers(backend: MatmulBackend | None) -> bool:
    names = ("pack_greedy_head", "greedy_head_bytes", "takes_greedy_head", "greedy_head")
    return backend is not None and all(hasattr(backend, name) for name in names)


def greedy_head_bytes(head: jax.ShapeDtypeStruct | None, backend: MatmulBackend | None) -> int:
    """Bytes ``add_greedy_head`` adds for a head of ``head``'s shape and dtype (0: none)."""
    if head is None or not _offers(backend):
        return 0
    return int(backend.greedy_head_bytes(head))


def add_greedy_head(params: dict, head: Any, backend: MatmulBackend | None) -> dict:
    """``params`` with the backend's data for ``head`` at ``GREEDY_HEAD_KEY`` where it has
    any (``head``: the weight ``CausalLM.plain_lm_head`` names, packed by ``backend``)."""
    if not _offers(backend) or not isinstance(head, PackedWeight):
        return params
    if head.layout != getattr(backend, "packed_layout", None):
        return params
    data = backend.pack_greedy_head(head)
    if data is None:
        return params
    return {**params, GREEDY_HEAD_KEY: data}


def greedy_head_fn(params: dict, head: Any, backend: MatmulBackend | None, batch: SamplingBatch):
    """``tokens(rows, num_rows) -> int32[M]`` for a step whose logits would be
    ``matmul(rows, head)`` sampled by the built-in sampler, where the backend can give its
    greedy tokens without them; else ``None`` (static: shapes and flags only)."""
    if GREEDY_HEAD_KEY not in params or not _offers(backend):
        return None
    if batch.num_logprobs != NO_LOGPROBS:
        return None
    if batch.penalty_token_ids.shape[1] or batch.bias_token_ids.shape[1]:
        return None
    if not backend.takes_greedy_head(batch.temperature.shape[0]):
        return None
    data = params[GREEDY_HEAD_KEY]

    def tokens(rows: jax.Array, num_rows: jax.Array) -> jax.Array:
        return backend.greedy_head(rows, head, data, num_rows)

    return tokens
