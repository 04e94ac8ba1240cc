"""``PackedWeight`` and ``pack_matmul_weights``: a backend's own weight layout in the params."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esurge_core.matmul.backend import XLAMatmulBackend, xla_matmul
from esurge_core.matmul.dispatch import (
    matmul,
    pack_matmul_weights,
    packed_lm_head_bytes,
    use_matmul_backend,
)
from esurge_core.matmul.packed_weight import PackedWeight


def _unpack_transposed(data, shape):
    return data.T


def _packed(w) -> PackedWeight:
    return PackedWeight(w.T, tuple(w.shape), w.dtype, "transposed", _unpack_transposed)


class _TransposingBackend(XLAMatmulBackend):
    """Keeps weights transposed; computes products from that layout."""

    name = "transposing"
    packed_layout = "transposed"

    def __init__(self):
        self.packed_products = 0

    def packs_weight(self, w):
        return w.shape[0] != w.shape[1]  # square ones stay

    def pack_weight(self, w):
        return _packed(w) if self.packs_weight(w) else None

    def matmul(self, x, w, num_rows, *, transpose_w, out_dtype):
        if isinstance(w, PackedWeight):
            self.packed_products += 1
            return xla_matmul(x, w.data, transpose_w=True, out_dtype=out_dtype)
        return super().matmul(x, w, num_rows, transpose_w=transpose_w, out_dtype=out_dtype)


@pytest.fixture
def params():
    rng = np.random.default_rng(0)
    return {
        "embed": jnp.asarray(rng.standard_normal((10, 4)), jnp.float32),
        "layers": [
            {"up": jnp.asarray(rng.standard_normal((4, 6)), jnp.float32)},
            {"up": jnp.asarray(rng.standard_normal((4, 4)), jnp.float32)},
        ],
    }


def test_only_the_listed_weights_the_backend_accepts_are_packed_and_the_input_is_kept(params):
    paths = [("layers", 0, "up"), ("layers", 1, "up")]
    packed = pack_matmul_weights(params, paths, _TransposingBackend())
    assert isinstance(packed["layers"][0]["up"], PackedWeight)
    assert packed["layers"][1]["up"] is params["layers"][1]["up"]  # declined: square
    assert packed["embed"] is params["embed"]  # not listed
    assert not isinstance(params["layers"][0]["up"], PackedWeight)  # input untouched
    assert pack_matmul_weights(params, paths, XLAMatmulBackend()) is params  # cannot pack
    assert pack_matmul_weights(params, paths, None) is params


def test_a_tied_lm_head_gets_a_packed_copy_of_the_transposed_embedding(params):
    tied = (("embed",), ("head",))
    backend = _TransposingBackend()
    packed = pack_matmul_weights(params, [], backend, tied_lm_head=tied)
    assert packed["embed"] is params["embed"]  # the lookup keeps the table
    assert "head" not in params
    head = packed["head"]
    assert isinstance(head, PackedWeight) and head.shape == (4, 10)
    np.testing.assert_array_equal(head.unpacked(), params["embed"].T)
    assert packed_lm_head_bytes(params, tied, backend) == params["embed"].nbytes
    x = jnp.ones((2, 4), jnp.float32)
    with use_matmul_backend(backend, jnp.int32(2)):
        logits = matmul(x, head)
    np.testing.assert_allclose(logits, x @ params["embed"].T, rtol=1e-6)
    # nothing to pack: no copy, no bytes
    assert "head" not in pack_matmul_weights(params, [], XLAMatmulBackend(), tied_lm_head=tied)
    assert packed_lm_head_bytes(params, tied, XLAMatmulBackend()) == 0
    assert packed_lm_head_bytes(params, None, backend) == 0


def test_packed_weights_travel_through_jit_as_pytrees(params):
    packed = pack_matmul_weights(params, [("layers", 0, "up")], _TransposingBackend())
    leaves, tree = jax.tree.flatten(packed)
    assert len(leaves) == 3
    again = jax.tree.unflatten(tree, leaves)["layers"][0]["up"]
    assert again.shape == (4, 6) and again.layout == "transposed" and again.ndim == 2

    @jax.jit
    def product(p, x):
        return matmul(x, p["layers"][0]["up"])

    x = jnp.ones((3, 4), jnp.float32)
    np.testing.assert_allclose(product(packed, x), x @ params["layers"][0]["up"], rtol=1e-6)


def test_the_packing_backend_computes_from_its_layout_and_xla_unpacks_elsewhere(params):
    backend = _TransposingBackend()
    w = params["layers"][0]["up"]
    packed = pack_matmul_weights(params, [("layers", 0, "up")], backend)["layers"][0]["up"]
    x = jnp.asarray(np.random.default_rng(1).standard_normal((5, 4)), jnp.float32)
    want = np.asarray(x @ w)
    with use_matmul_backend(backend, jnp.int32(5)):
        got = matmul(x, packed)
    assert backend.packed_products == 1
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(matmul(x, packed), want, rtol=1e-6)  # no backend: unpacked
    with use_matmul_backend(XLAMatmulBackend(), jnp.int32(5)):  # knows no layout: unpacked
        np.testing.assert_allclose(matmul(x, packed), want, rtol=1e-6)
    assert packed.nbytes == w.nbytes


def test_a_packed_weight_cannot_be_used_transposed(params):
    packed = _packed(params["layers"][0]["up"])
    with pytest.raises(ValueError, match="transpose_w is not allowed"):
        matmul(jnp.ones((2, 6), jnp.float32), packed, transpose_w=True)
