"""Parameter specifications: which checkpoint tensor fills which parameter, and how.

A model describes its weights as a list of `ParamSpec`s built from its config. Each spec
names the Hugging Face tensor, the shape the config implies for it, the place of the
parameter in the params pytree, the logical sharding axes of the parameter, and the
layout change from the checkpoint (e.g. a transposed linear weight). From that one list
come the shape checks, the loading and the logical-axes tree, so they cannot disagree.

Params pytree layout: nested dicts of arrays, with the decoder layers as a list of dicts
(`params["layers"][i]["attn"]["q"]`). Layers are not stacked because hybrid models (Llama 4's
dense and MoE layers) have layers of different shapes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from esurge_core.weights.errors import MissingTensorError, TensorShapeError

#: A path into the params pytree: dict keys and list indices.
ParamPath = tuple[str | int, ...]
#: One logical axis name per dimension (None: never sharded).
LogicalAxes = tuple[str | None, ...]


def _identity(array: np.ndarray) -> np.ndarray:
    return array


def transpose(array: np.ndarray) -> np.ndarray:
    """Turn a torch `Linear` weight [out, in] into our [in, out] so a layer computes `x @ w`."""
    return np.ascontiguousarray(array.T)


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter of a model and the checkpoint tensor it comes from.

    Attributes:
        path: Where the parameter lives in the params pytree.
        hf_name: The Hugging Face tensor name in the checkpoint.
        hf_shape: The tensor's shape as the config implies it (checkpoint layout).
        axes: Logical axis names of the parameter (after `convert`), one per dimension.
        convert: Checkpoint layout -> parameter layout (e.g. `transpose`); numpy to numpy.
        matmul_weight: The model multiplies activations by this [in, out] parameter only
            through ``esurge_core.matmul.dispatch.matmul``, so a matmul backend may keep it
            in its own layout (``pack_matmul_weights``).
    """

    path: ParamPath
    hf_name: str
    hf_shape: tuple[int, ...]
    axes: LogicalAxes
    convert: Callable[[np.ndarray], np.ndarray] = _identity
    matmul_weight: bool = False


def linear_spec(
    path: ParamPath,
    hf_name: str,
    in_features: int,
    out_features: int,
    axes: LogicalAxes,
    *,
    matmul_weight: bool = True,
) -> ParamSpec:
    """Spec of a torch `Linear` weight ([out, in] in the checkpoint), stored as [in, out].

    ``matmul_weight=False`` for a weight the model uses other than through ``matmul``.
    """
    return ParamSpec(
        path, hf_name, (out_features, in_features), axes, transpose, matmul_weight=matmul_weight
    )


def _set_path(tree: dict[str, Any], path: ParamPath, value: Any) -> None:
    # Walk/create nested containers: a str key makes a dict level, an int key a list level.
    node: Any = tree
    for key, next_key in itertools.pairwise(path):
        empty: Any = [] if isinstance(next_key, int) else {}
        if isinstance(key, int):
            node.extend({} for _ in range(key + 1 - len(node)))
            if node[key] == {}:
                node[key] = empty
        else:
            node.setdefault(key, empty)
        node = node[key]
    last = path[-1]
    if isinstance(last, int):
        node.extend(None for _ in range(last + 1 - len(node)))
    node[last] = value


def tree_from_specs(specs: Sequence[ParamSpec], leaf: Callable[[ParamSpec], Any]) -> dict:
    """Build the params-shaped pytree whose leaf at each spec's path is `leaf(spec)`."""
    tree: dict[str, Any] = {}
    for spec in specs:
        _set_path(tree, spec.path, leaf(spec))
    return tree


def check_tensors(
    specs: Sequence[ParamSpec], tensors: Mapping[str, Any], architecture: str
) -> None:
    """Check that every tensor the specs need is present with the shape the config implies.

    Extra tensors in the checkpoint (e.g. rotary `inv_freq` buffers) are ignored.

    Raises:
        MissingTensorError: a needed tensor is absent (the message lists every missing one).
        TensorShapeError: a tensor has another shape (the message lists every mismatch).
    """
    missing = [spec.hf_name for spec in specs if spec.hf_name not in tensors]
    if missing:
        listed = ", ".join(repr(name) for name in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise MissingTensorError(
            missing[0],
            f"checkpoint of {architecture} lacks {len(missing)} tensor(s) the model needs: "
            f"{listed}{more}. The checkpoint holds {len(tensors)} tensors; check that every "
            "safetensors shard is in the folder and that config.json matches the weights.",
        )
    mismatched = [
        (spec, tuple(tensors[spec.hf_name].shape))
        for spec in specs
        if tuple(tensors[spec.hf_name].shape) != spec.hf_shape
    ]
    if mismatched:
        first, actual = mismatched[0]
        listed = "; ".join(
            f"{spec.hf_name!r} has shape {shape}, config implies {spec.hf_shape}"
            for spec, shape in mismatched[:10]
        )
        raise TensorShapeError(
            first.hf_name,
            first.hf_shape,
            actual,
            f"checkpoint of {architecture} disagrees with its config.json: {listed}. "
            "The weights were probably saved from another config (hidden_size, "
            "num_attention_heads, num_key_value_heads, head_dim, intermediate_size, vocab_size).",
        )


def load_from_specs(
    specs: Sequence[ParamSpec],
    tensors: Mapping[str, Any],
    dtype: Any,
    architecture: str,
    *,
    progress: bool = True,
) -> dict:
    """Check every tensor, then convert each to its parameter layout and `dtype` on device.

    Args:
        specs: The model's parameter specs.
        tensors: Hugging Face name -> array-like with `.shape` (numpy, memory-mapped, ...).
        dtype: The parameter dtype (float32 or bfloat16).
        architecture: Named in error messages.
        progress: Show a tqdm progress bar over the tensors.

    Raises:
        MissingTensorError, TensorShapeError: see `check_tensors`.
    """
    check_tensors(specs, tensors, architecture)
    params: dict[str, Any] = {}
    bar = tqdm(specs, desc=f"Loading {architecture} weights", unit="tensor", disable=not progress)
    for spec in bar:
        array = spec.convert(np.asarray(tensors[spec.hf_name]))
        _set_path(params, spec.path, jnp.asarray(array, dtype=dtype))
    return params
