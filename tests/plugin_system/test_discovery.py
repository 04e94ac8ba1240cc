"""Plugin discovery and loading: entry points, allow/block lists, broken plugins."""

from __future__ import annotations

import importlib_metadata
import pytest

from esurge_core.components import ComponentKind
from esurge_core.errors import DuplicateComponentError, PluginError
from esurge_core.plugin_manager import PluginManager

from .conftest import fake_entry_point


def installed_entry_points():
    return list(importlib_metadata.entry_points(group="esurge"))


def test_installed_first_party_and_example_plugins_are_discovered():
    registry = PluginManager().registry
    assert "xla" in registry.names(ComponentKind.ATTENTION_BACKEND)
    assert "paged" in registry.names(ComponentKind.KV_CACHE_ALLOCATOR)
    spec = registry.get(ComponentKind.SCHEDULER, "shortest_first")
    assert spec.origin.distribution == "esurge-shortest-first"


def test_components_record_the_distribution_and_version_that_registered_them(make_manager):
    manager = make_manager([fake_entry_point("good_backend", "esurge-fancy", "2.3.4")])
    spec = manager.registry.get(ComponentKind.ATTENTION_BACKEND, "fancy")
    assert (spec.origin.distribution, spec.origin.version) == ("esurge-fancy", "2.3.4")


def test_builtin_defaults_are_registered_like_plugins_under_esurge_core(make_manager):
    manager = make_manager([])
    spec = manager.registry.get(ComponentKind.KV_CACHE_ALLOCATOR, "paged")
    assert spec.origin.distribution == "esurge-core"
    assert [r.name for r in manager.records] == ["builtin"]


def test_loading_twice_is_idempotent(make_manager):
    manager = make_manager([fake_entry_point("good_backend", "esurge-fancy")])
    before = manager.registry.all()
    manager.load()
    manager.load()
    assert manager.registry.all() == before
    assert len(manager.records) == 2


def test_allow_list_loads_only_named_plugins(make_manager):
    manager = make_manager(
        [
            fake_entry_point("good_backend", "esurge-fancy"),
            fake_entry_point("raises_in_hook", "esurge-other"),
        ],
        ESURGE_PLUGINS="esurge-fancy",
    )
    statuses = {r.distribution: r.status for r in manager.records}
    assert statuses == {
        "esurge-core": "loaded",
        "esurge-fancy": "loaded",
        "esurge-other": "not allowed",
    }


def test_allow_list_matches_entry_point_names_too(make_manager):
    manager = make_manager(
        [fake_entry_point("good_backend", "esurge-fancy")], ESURGE_PLUGINS="good_backend"
    )
    assert "fancy" in manager.registry.names(ComponentKind.ATTENTION_BACKEND)


def test_empty_allow_list_loads_no_entry_point_plugins(make_manager):
    manager = make_manager([fake_entry_point("good_backend", "esurge-fancy")], ESURGE_PLUGINS="")
    assert manager.registry.names(ComponentKind.ATTENTION_BACKEND) == []
    assert [r.status for r in manager.records] == ["loaded", "not allowed"]


def test_block_list_skips_named_plugins(make_manager):
    manager = make_manager(
        [fake_entry_point("good_backend", "esurge-fancy")], ESURGE_DISABLE_PLUGINS="esurge_fancy"
    )
    assert manager.registry.names(ComponentKind.ATTENTION_BACKEND) == []
    assert manager.records[-1].status == "disabled"


def test_plugin_failing_on_import_warns_with_its_distribution_and_the_rest_load(make_manager):
    with pytest.warns(RuntimeWarning, match=r"broken_on_import.*esurge-broken 0\.9"):
        manager = make_manager(
            [
                fake_entry_point("broken_on_import", "esurge-broken", "0.9"),
                fake_entry_point("good_backend", "esurge-fancy"),
            ]
        )
    assert "fancy" in manager.registry.names(ComponentKind.ATTENTION_BACKEND)
    failed = [r for r in manager.records if r.status == "failed"]
    assert [r.distribution for r in failed] == ["esurge-broken"]
    assert "some_missing_dependency" in failed[0].detail


def test_plugin_failing_inside_a_hook_leaves_nothing_half_registered(make_manager):
    with pytest.warns(RuntimeWarning, match="registration blew up"):
        manager = make_manager([fake_entry_point("raises_in_hook", "esurge-half")])
    assert "half_done" not in manager.registry.names(ComponentKind.SCHEDULER)


def test_strict_mode_reraises_a_broken_plugin(make_manager):
    with pytest.raises(PluginError, match="esurge-broken"):
        make_manager(
            [fake_entry_point("broken_on_import", "esurge-broken")], ESURGE_STRICT_PLUGINS="1"
        )


def test_misspelt_hook_name_fails_loudly(make_manager):
    with pytest.warns(RuntimeWarning, match="esurge_register_schedulerz"):
        manager = make_manager([fake_entry_point("misspelt_hook", "esurge-typo")])
    assert manager.records[-1].status == "failed"
    with pytest.raises(PluginError, match="does not define"):
        make_manager([fake_entry_point("misspelt_hook", "esurge-typo")], ESURGE_STRICT_PLUGINS="1")


def test_same_name_from_two_distributions_is_an_error_naming_both(make_manager):
    entry_points = [*installed_entry_points(), fake_entry_point("duplicate_xla", "esurge-impostor")]
    with pytest.raises(PluginError) as excinfo:
        make_manager(entry_points, ESURGE_STRICT_PLUGINS="1")
    cause = excinfo.value.__cause__
    assert isinstance(cause, DuplicateComponentError)
    assert "esurge-attention-xla" in str(cause)
    assert "esurge-impostor" in str(cause)


def test_duplicate_plugin_is_skipped_and_the_first_registration_kept(make_manager):
    entry_points = [*installed_entry_points(), fake_entry_point("duplicate_xla", "esurge-impostor")]
    with pytest.warns(RuntimeWarning, match="registered twice"):
        manager = make_manager(entry_points)
    spec = manager.registry.get(ComponentKind.ATTENTION_BACKEND, "xla")
    assert spec.origin.distribution == "esurge-attention-xla"
