"""``pack_host_arrays``: a step's host inputs in one buffer per dtype, recovered in the step."""

from __future__ import annotations

import jax
import numpy as np

from esurge_core.runner.host_inputs import pack_host_arrays, unpack_host_arrays
from esurge_core.sampling.batch import SamplingBatch


def _tree():
    return {
        "ids": np.arange(6, dtype=np.int32),
        "table": np.arange(12, dtype=np.int32).reshape(3, 4),
        "temperature": np.array([0.5, 1.0], np.float32),
        "seeds": np.array([[1, 2], [3, 4]], np.uint32),
        "empty": np.zeros((2, 0), np.int32),
    }


def test_leaves_of_each_dtype_share_one_buffer_and_come_back_equal():
    tree = _tree()
    layout, buffers = pack_host_arrays(tree)
    sizes = {dtype: b.shape for dtype, b in zip(layout.dtypes, buffers, strict=True)}
    assert sizes == {"int32": (18,), "float32": (2,), "uint32": (4,)}
    back = jax.jit(unpack_host_arrays, static_argnums=0)(layout, buffers)
    assert back.keys() == tree.keys()
    for key, value in tree.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape
        np.testing.assert_array_equal(back[key], value)


def test_the_layout_is_a_static_key_equal_for_equal_shapes():
    first, _ = pack_host_arrays(_tree())
    changed = _tree() | {"ids": np.arange(6, 12, dtype=np.int32)}
    assert pack_host_arrays(changed)[0] == first
    assert hash(pack_host_arrays(changed)[0]) == hash(first)
    longer = _tree() | {"ids": np.arange(8, dtype=np.int32)}
    assert pack_host_arrays(longer)[0] != first


def test_a_sampling_batch_round_trips_with_its_static_field():
    batch = SamplingBatch.from_requests([], 4)
    layout, buffers = pack_host_arrays(batch)
    back = unpack_host_arrays(layout, buffers)
    assert isinstance(back, SamplingBatch) and back.num_logprobs == batch.num_logprobs
    for name in ("temperature", "top_k", "seed_words", "penalty_token_ids"):
        np.testing.assert_array_equal(getattr(back, name), getattr(batch, name))
