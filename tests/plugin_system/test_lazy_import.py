"""Discovering plugins must not import a kernel module or initialise a JAX backend."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
from esurge_core.plugin_manager import get_plugin_manager
from esurge_core.capabilities import Requirements
from esurge_core.components import ComponentKind
manager = get_plugin_manager()
registry = manager.registry
registry.select(ComponentKind.ATTENTION_BACKEND, "auto", Requirements(platform="cpu"))
print(json.dumps({
    "components": [s.name for s in registry.all()],
    "modules": sorted(m for m in sys.modules if m.split(".")[0] in {"jax", "jaxlib", "flax"}
                      or m.endswith(".kernel") or m.startswith("esurge_attention_xla.backend")),
}))
"""


def run_probe() -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_discovery_and_selection_import_no_jax_and_no_kernel():
    probe = run_probe()
    assert {"xla", "paged", "shortest_first"} <= set(probe["components"])
    assert probe["modules"] == []


def test_loading_the_selected_backend_imports_its_kernel():
    from esurge_core.plugin_manager import PluginManager

    spec = PluginManager().registry.get(
        __import__("esurge_core.components").components.ComponentKind.ATTENTION_BACKEND, "xla"
    )
    backend_class = spec.load()
    assert "esurge_attention_xla.kernel" in sys.modules
    assert backend_class().name == "xla"
