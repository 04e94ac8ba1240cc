"""``matmul="auto"`` and named matmul backends: which one serves the engine, and how it gets
the products of a step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esurge_core.capabilities import Requirements
from esurge_core.components import ComponentKind
from esurge_core.engine.esurge import _matmul_choice
from esurge_core.errors import UnknownComponentError, UnusableComponentError
from esurge_core.matmul.backend import MatmulBackend, XLAMatmulBackend, xla_matmul
from esurge_core.matmul.packed_weight import PackedWeight
from esurge_core.platform import current_platform
from esurge_core.plugin_manager import PluginManager

MATMUL = ComponentKind.MATMUL_BACKEND


def _select(monkeypatch, name: str, platform: str) -> str:
    monkeypatch.setenv("ESURGE_PLATFORM", platform)
    registry = PluginManager().registry
    return registry.select(MATMUL, name, Requirements(platform=current_platform())).name


@pytest.mark.parametrize(("platform", "expected"), [("cpu", "cpu"), ("gpu", "xla"), ("tpu", "xla")])
def test_auto_picks_the_native_kernel_on_cpu_only(monkeypatch, platform, expected):
    assert _select(monkeypatch, "auto", platform) == expected


def test_auto_on_cpu_skips_the_native_kernel_without_a_compiler(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert _select(monkeypatch, "auto", "cpu") == "xla"


def test_the_cpu_backend_cannot_serve_a_gpu(monkeypatch):
    with pytest.raises(UnusableComponentError, match="platform 'gpu' is not supported"):
        _select(monkeypatch, "cpu", "gpu")


def test_unknown_backend_names_the_installed_ones(monkeypatch):
    with pytest.raises(UnknownComponentError, match="xla"):
        _select(monkeypatch, "no-such-matmul", "cpu")


def test_auto_means_xla_under_tensor_parallelism():
    assert _matmul_choice("auto", parallel_plan=object()) == "xla"
    assert _matmul_choice("auto", parallel_plan=None) == "auto"
    assert _matmul_choice("cpu", parallel_plan=object()) == "cpu"


def test_backends_implement_the_protocol():
    registry = PluginManager().registry
    for name in ("xla", "cpu"):
        backend = registry.get(MATMUL, name).load()()
        assert isinstance(backend, MatmulBackend) and backend.name == name


@pytest.mark.parametrize("transpose_w", [False, True])
@pytest.mark.parametrize(
    ("x_dtype", "w_dtype", "out_dtype"),
    [
        ("float32", "float32", "float32"),
        ("float32", "bfloat16", "float32"),
        ("bfloat16", "bfloat16", "float32"),
        ("bfloat16", "bfloat16", "bfloat16"),
    ],
)
def test_xla_backend_rounds_inputs_to_the_weights_dtype(transpose_w, x_dtype, w_dtype, out_dtype):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((3, 8)), x_dtype)
    w = jnp.asarray(rng.standard_normal((5, 8) if transpose_w else (8, 5)), w_dtype)
    got = XLAMatmulBackend().matmul(
        x, w, jnp.int32(3), transpose_w=transpose_w, out_dtype=out_dtype
    )
    dense_w = np.asarray(w, np.float32)
    want = np.asarray(x.astype(w_dtype), np.float32) @ (dense_w.T if transpose_w else dense_w)
    assert got.dtype == jnp.dtype(out_dtype)
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=1e-2, atol=1e-2)


def test_engine_reports_its_backends_and_cpu_equals_xla_greedy():
    from esurge_core import SamplingParams, eSurge

    prompts = ["The capital of France is", "def fibonacci(n):", "1, 2, 3,"]
    tokens = {}
    for name in ("cpu", "xla"):
        engine = eSurge(
            "smollm2-135m-instruct",
            matmul=name,
            param_dtype="bfloat16",
            max_model_len=128,
            max_num_seqs=4,
            page_size=16,
            kv_cache_memory=64 << 20,
        )
        try:
            assert engine.matmul_backend_name == name
            packed = isinstance(engine.runner.params["layers"][0]["mlp"]["gate_up"], PackedWeight)
            assert packed == (name == "cpu")
            assert not isinstance(engine.runner.params["embed_tokens"], PackedWeight)
            # the tied LM head: a packed copy of the transposed embedding with `cpu` only
            head = engine.runner.params.get("lm_head")
            assert isinstance(head, PackedWeight) == (name == "cpu")
            if head is not None:
                assert head.shape == engine.runner.params["embed_tokens"].shape[::-1]
            outputs = engine.generate(
                prompts, SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
            )
        finally:
            engine.close()
        tokens[name] = [list(o.outputs[0].token_ids) for o in outputs]
    assert tokens["cpu"] == tokens["xla"]


def test_a_jitted_product_with_a_traced_row_count_compiles_once(monkeypatch):
    backend = PluginManager().registry.get(MATMUL, "cpu").load()()
    w = jnp.ones((16, 32), jnp.bfloat16)
    traces = []

    @jax.jit
    def step(x, rows):
        traces.append(1)
        return backend.matmul(x, w, rows, transpose_w=False, out_dtype=jnp.float32)

    x = jnp.ones((8, 16), jnp.float32)
    for rows in (1, 5, 8):
        out = np.asarray(step(x, jnp.int32(rows)))
        np.testing.assert_allclose(out[:rows], np.asarray(xla_matmul(x, w))[:rows])
    assert len(traces) == 1
