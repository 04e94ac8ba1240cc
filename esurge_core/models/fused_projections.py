"""Fusing the projections that read the same input into one weight: q/k/v and gate/up.

A decoder layer multiplies its normed input by q, k and v, and the MLP's input by gate and
up. Concatenated along the output axis, each set is one product instead of two or three: one
pass over the activations, one kernel call, and the small k/v matrices streamed as part of a
wide one (docs/PERFORMANCE.md, step 22).

The blocks of ``transformer_blocks`` compute from either layout: ``project_qkv`` uses
``qkv`` (and ``qkv_bias``) when present, ``gated_mlp`` uses ``gate_up``. The engine's loader
fuses the params once (``fuse_projections``, in place, so no second copy of the weights is
ever held); tensor parallelism shards q/k/v by heads and gate/up by columns, which a
concatenated matrix does not line up with, so ``TensorParallelPlan.shard_params`` takes them
apart again first (``split_projections``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from esurge_core.models.params import ParamPath, ParamSpec
from esurge_core.param_paths import node_at

#: Suffix of a projection's bias next to its weight (``q`` -> ``q_bias``).
BIAS_SUFFIX = "_bias"


@dataclass(frozen=True, slots=True)
class Fusion:
    """Weights ``parts`` (siblings in one params dict, ``[in, out_i]``) fused into ``name``."""

    name: str
    parts: tuple[str, ...]


QKV = Fusion("qkv", ("q", "k", "v"))
GATE_UP = Fusion("gate_up", ("gate", "up"))
FUSIONS = (QKV, GATE_UP)


def fuse_projections(params: dict, weight_paths: Sequence[ParamPath]) -> None:
    """Fuse, **in place**, every set of ``FUSIONS`` parts found among ``weight_paths``.

    A set is fused where all its parts are matmul weights (``weight_paths``) in one dict,
    2-D, with the same input size and dtype; their biases are fused with them where every
    part has one (where only some have, the set stays apart). Each set's parts leave the dict
    as it is fused, so where nothing else holds them their memory is freed at once (the peak
    is one set, not a second copy of the model).
    """
    known = set(map(tuple, weight_paths))
    for parent_path in dict.fromkeys(tuple(path[:-1]) for path in known):
        node = node_at(params, parent_path)
        for fusion in FUSIONS:
            parts = {(*parent_path, part) for part in fusion.parts}
            if parts <= known and _fusable(node, fusion):
                _fuse(node, fusion)


def held_weight_paths(params: dict, weight_paths: Sequence[ParamPath]) -> list[ParamPath]:
    """``weight_paths`` as ``params`` holds them: each fused set's parts as the fused path."""
    held: list[ParamPath] = []
    for path in map(tuple, weight_paths):
        node, name = node_at(params, path[:-1]), path[-1]
        fusion = next((f for f in FUSIONS if name in f.parts), None)
        if isinstance(node, dict) and name not in node and fusion and fusion.name in node:
            path = (*path[:-1], fusion.name)
        if path not in held:
            held.append(path)
    return held


def split_projections(params: dict, specs: Sequence[ParamSpec]) -> dict:
    """A copy of ``params`` (new containers) with every fused weight split into its parts,
    each part as wide as its spec says (``specs``: the model's ``param_specs()``)."""
    params = jax.tree.map(lambda leaf: leaf, params)  # new containers, the same arrays
    widths = {spec.path: spec.hf_shape[0] for spec in specs if spec.matmul_weight}
    for path in widths:
        node, name = node_at(params, path[:-1]), path[-1]
        fusion = next((f for f in FUSIONS if name == f.parts[0]), None)
        if fusion is None or not isinstance(node, dict) or fusion.name not in node:
            continue
        part_widths = [widths[(*path[:-1], part)] for part in fusion.parts]
        for suffix in ("", BIAS_SUFFIX):
            fused = node.pop(f"{fusion.name}{suffix}", None)
            if fused is None:
                continue
            start = 0
            for part, part_width in zip(fusion.parts, part_widths, strict=True):
                node[f"{part}{suffix}"] = fused[..., start : start + part_width]
                start += part_width
    return params


def _fusable(node: Any, fusion: Fusion) -> bool:
    if not isinstance(node, dict) or fusion.name in node:
        return False
    weights = [node.get(part) for part in fusion.parts]
    if any(getattr(w, "ndim", None) != 2 for w in weights):
        return False
    if len({(w.shape[0], jnp.dtype(w.dtype)) for w in weights}) != 1:
        return False
    with_bias = [f"{part}{BIAS_SUFFIX}" in node for part in fusion.parts]
    return all(with_bias) or not any(with_bias)


def _fuse(node: dict, fusion: Fusion) -> None:
    node[fusion.name] = jnp.concatenate([node.pop(part) for part in fusion.parts], axis=1)
    biases = [f"{part}{BIAS_SUFFIX}" for part in fusion.parts]
    if biases[0] in node:
        node[f"{fusion.name}{BIAS_SUFFIX}"] = jnp.concatenate([node.pop(b) for b in biases])
