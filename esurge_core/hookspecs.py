"""Hook specifications of eSurge: the contract between the core and its plugins.

A plugin is a module (found through the ``esurge`` entry-point group) that implements some of
these hooks with ``@esurge_core.hookimpl``. Every hook receives one typed ``register`` object
and hands over *names, capabilities and import paths*, never loaded objects: discovery must not
import a kernel module, initialise a JAX backend or touch a device. The heavy module is imported
only when a configuration selects the component.

Hooks are called once per process, when the plugin manager loads plugins, and never inside
jitted code or per token.

Docstring template of every hook: summary; ``:param register:``; when it is called;
``.. versionadded::``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from esurge_core.registrars import (
        AttentionBackendRegistrar,
        FrontendRegistrar,
        KVCacheAllocatorRegistrar,
        MatmulBackendRegistrar,
        ModelRegistrar,
        SamplerRegistrar,
        SchedulerRegistrar,
        ToolParserRegistrar,
    )

PROJECT_NAME = "esurge"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -------------------------------------------------------------------------------------------
# Compute: what runs inside the compiled model step
# -------------------------------------------------------------------------------------------


@hookspec
def esurge_register_attention_backends(register: AttentionBackendRegistrar) -> None:
    """Register ragged paged attention backends.

    Call ``register(name=..., loader="pkg.module:factory", capabilities=Capabilities.of(...))``
    once per backend. The capabilities (platforms, dtypes, head dims, page sizes, attention
    patterns, ``auto`` priority per platform) decide whether the backend can serve a
    configuration without importing it.

    :param register: an ``AttentionBackendRegistrar``.

    Called once per process when plugins are loaded.

    .. versionadded:: 0.1
    """


@hookspec
def esurge_register_matmul_backends(register: MatmulBackendRegistrar) -> None:
    """Register backends for the models' weight products (``esurge_core.matmul``).

    Call ``register(name=..., loader="pkg.module:factory", capabilities=Capabilities.of(...))``
    once per backend; the factory returns a ``MatmulBackend``, which computes the products it
    ``handles`` (e.g. a decode step's few rows) and leaves the rest to XLA. Config selects one
    with ``matmul="name"``; ``auto`` takes the highest ``auto_priority`` for the platform.

    :param register: a ``MatmulBackendRegistrar``.

    Called once per process when plugins are loaded.

    .. versionadded:: 0.1
    """


@hookspec
def esurge_register_samplers(register: SamplerRegistrar) -> None:
    """Register samplers that turn a batch of logits into next tokens.

    Call ``register(name=..., loader="pkg.module:factory")``; config selects one with
    ``sampler="name"``.

    :param register: a ``SamplerRegistrar``.

    Called once per process when plugins are loaded.

    .. versionadded:: 0.1
    """


@hookspec
def esurge_register_models(register: ModelRegistrar) -> None:
    """Register model architectures by the ``architectures`` field of a model's config.

    Call ``register(architecture="MyForCausalLM", loader="pkg.module:build")``.

    :param register: a ``ModelRegistrar``.

    Called once per process when plugins are loaded.

    .. versionadded:: 0.1
    """


# -------------------------------------------------------------------------------------------
# Host: memory and scheduling decisions made every step
# -------------------------------------------------------------------------------------------


@hookspec
def esurge_register_kv_cache_allocators(register: KVCacheAllocatorRegistrar) -> None:
    """Register KV-cache page allocators (page pool, prefix cache, page release).

    Call ``register(name=..., loader="pkg.module:ManagerClass")``; config selects one with
    ``kv_cache_allocator="name"``.

    :param register: a ``KVCacheAllocatorRegistrar``.

    Called once per process when plugins are loaded.

    .. versionadded:: 0.1
    """


@hookspec
def esurge_register_schedulers(register: SchedulerRegistrar) -> None:
    """Register scheduling policies: who is admitted first and who is preempted.

    Call ``register(name=..., loader="pkg.module:PolicyClass")`` where the class implements
    ``esurge_core.scheduling.policy.SchedulingPolicy``; config selects one with
    ``scheduler="name"``.

    :param register: a ``SchedulerRegistrar``.

    Called once per process when plugins are loaded.

    .. versionadded:: 0.1
    """


# -------------------------------------------------------------------------------------------
# Edges: how users reach the engine and how its output is interpreted
# -------------------------------------------------------------------------------------------


@hookspec
def esurge_register_frontends(register: FrontendRegistrar) -> None:
    """Register frontends; each becomes an ``esurge <name>`` sub-command.

    Call ``register(name=..., loader="pkg.module:FrontendClass")``; the class provides
    ``add_arguments(parser)`` and ``run(args) -> int``.

    :param register: a ``FrontendRegistrar``.

    Called once per process when plugins are loaded.

    .. versionadded:: 0.1
    """


@hookspec
def esurge_register_tool_parsers(register: ToolParserRegistrar) -> None:
    """Register parsers that extract OpenAI ``tool_calls`` from generated text.

    Call ``register(name=..., loader="pkg.module:ParserClass")``.

    :param register: a ``ToolParserRegistrar``.

    Called once per process when plugins are loaded.

    .. versionadded:: 0.1
    """
