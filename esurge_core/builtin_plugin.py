"""The core's own defaults, registered through the same hooks as any third-party plugin.

The plugin manager registers this module first, under the ``esurge-core`` distribution; a
third-party plugin that wants to replace a default registers its own component under another
name and users select it in config.
"""

from __future__ import annotations

from esurge_core.capabilities import Capabilities
from esurge_core.hookspecs import hookimpl
from esurge_core.registrars import (
    FrontendRegistrar,
    KVCacheAllocatorRegistrar,
    MatmulBackendRegistrar,
    ModelRegistrar,
    SamplerRegistrar,
)

#: Architectures implemented in ``esurge_core.models`` (kept here as data so registering
#: them imports no model code).
BUILTIN_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "Gemma3ForCausalLM",
    "Llama4ForCausalLM",
)


@hookimpl
def esurge_register_kv_cache_allocators(register: KVCacheAllocatorRegistrar) -> None:
    """The paged allocator with prefix caching and window-aware page release."""
    register(
        name="paged",
        loader="esurge_core.kv_cache.manager:KVCacheManager",
        description="page pool with LRU prefix cache, per-group page release",
    )


@hookimpl
def esurge_register_matmul_backends(register: MatmulBackendRegistrar) -> None:
    """``xla``: every weight product through XLA's dot, on every platform."""
    register(
        name="xla",
        loader="esurge_core.matmul.backend:XLAMatmulBackend",
        capabilities=Capabilities.of(auto_priority={"cpu": 100, "gpu": 100, "tpu": 100}),
        description="weight products through XLA's dot (every platform)",
    )


@hookimpl
def esurge_register_samplers(register: SamplerRegistrar) -> None:
    """The on-device batched sampler (penalties, bias, top-k/p, min-p, seeded rows)."""
    register(
        name="default",
        loader="esurge_core.sampling.sampler:sample",
        description="per-row batched sampler on device",
    )


@hookimpl
def esurge_register_models(register: ModelRegistrar) -> None:
    """Every architecture the core implements."""
    for architecture in BUILTIN_ARCHITECTURES:
        register(
            architecture=architecture,
            loader="esurge_core.models.registry:build_model",
            description="built-in JAX implementation",
        )


@hookimpl
def esurge_register_frontends(register: FrontendRegistrar) -> None:
    """``esurge generate`` and ``esurge chat``."""
    register(
        name="generate",
        loader="esurge_core.frontends.generate:GenerateFrontend",
        description="generate completions for prompts (batch, or --stream)",
    )
    register(
        name="chat",
        loader="esurge_core.frontends.chat:ChatFrontend",
        description="interactive streaming chat with the model",
    )
    register(
        name="bench",
        loader="esurge_core.frontends.bench:BenchFrontend",
        description="benchmarks: offline throughput",
    )
