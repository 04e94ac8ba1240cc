"""Each hook registers its kind of component, with the typed registrar of that kind."""

from __future__ import annotations

import pytest

from esurge_core import hookimpl
from esurge_core.capabilities import Capabilities
from esurge_core.components import ComponentKind, Origin
from esurge_core.errors import PluginError
from esurge_core.plugin_manager import PluginManager


def register_plugin(plugin: object) -> PluginManager:
    manager = PluginManager(entry_points=[], environ={}).load()
    manager._add_plugin(plugin, "inline", Origin("esurge-inline", "0.0.1"), "inline")
    return manager


class AllHooksPlugin:
    @hookimpl
    def esurge_register_attention_backends(self, register):
        register(name="a", loader="m:A", capabilities=Capabilities.of(platforms=["cpu"]))

    @hookimpl
    def esurge_register_matmul_backends(self, register):
        register(name="mm", loader="m:M", capabilities=Capabilities.of(platforms=["cpu"]))

    @hookimpl
    def esurge_register_kv_cache_allocators(self, register):
        register(name="k", loader="m:K")

    @hookimpl
    def esurge_register_schedulers(self, register):
        register(name="s", loader="m:S")

    @hookimpl
    def esurge_register_samplers(self, register):
        register(name="sa", loader="m:Sa")

    @hookimpl
    def esurge_register_frontends(self, register):
        register(name="f", loader="m:F", description="a frontend")

    @hookimpl
    def esurge_register_models(self, register):
        register(architecture="TinyForCausalLM", loader="m:build")

    @hookimpl
    def esurge_register_tool_parsers(self, register):
        register(name="t", loader="m:T")


@pytest.mark.parametrize(
    ("hook", "kind", "name"),
    [
        ("esurge_register_attention_backends", ComponentKind.ATTENTION_BACKEND, "a"),
        ("esurge_register_matmul_backends", ComponentKind.MATMUL_BACKEND, "mm"),
        ("esurge_register_kv_cache_allocators", ComponentKind.KV_CACHE_ALLOCATOR, "k"),
        ("esurge_register_schedulers", ComponentKind.SCHEDULER, "s"),
        ("esurge_register_samplers", ComponentKind.SAMPLER, "sa"),
        ("esurge_register_frontends", ComponentKind.FRONTEND, "f"),
        ("esurge_register_models", ComponentKind.MODEL, "TinyForCausalLM"),
        ("esurge_register_tool_parsers", ComponentKind.TOOL_PARSER, "t"),
    ],
)
def test_hook_registers_its_kind_under_the_plugins_distribution(hook, kind, name):
    manager = register_plugin(AllHooksPlugin())
    spec = manager.registry.get(kind, name)
    assert spec.origin == Origin("esurge-inline", "0.0.1")
    assert spec.kind is kind


def test_attention_backend_capabilities_are_kept_as_data():
    manager = register_plugin(AllHooksPlugin())
    spec = manager.registry.get(ComponentKind.ATTENTION_BACKEND, "a")
    assert spec.capabilities.platforms == frozenset({"cpu"})


@pytest.mark.parametrize("bad_loader", ["no_colon", "module:", ":attr", "m:not-an-identifier"])
def test_registering_a_malformed_loader_path_is_an_error(bad_loader):
    class BadLoader:
        @hookimpl
        def esurge_register_schedulers(self, register):
            register(name="s", loader=bad_loader)

    with pytest.raises(PluginError, match="import path"):
        register_plugin(BadLoader())


@pytest.mark.parametrize("bad_name", ["", "has space", "semi;colon", 3])
def test_registering_an_invalid_name_is_an_error(bad_name):
    class BadName:
        @hookimpl
        def esurge_register_schedulers(self, register):
            register(name=bad_name, loader="m:S")

    with pytest.raises(PluginError, match="invalid name"):
        register_plugin(BadName())


def test_loading_a_component_whose_module_is_missing_names_the_distribution():
    manager = register_plugin(AllHooksPlugin())
    with pytest.raises(PluginError, match="esurge-inline 0.0.1.*Reinstall esurge-inline"):
        manager.registry.get(ComponentKind.SCHEDULER, "s").load()
