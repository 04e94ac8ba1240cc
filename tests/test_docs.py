"""Docs as contracts: every hook has a section in docs/plugins.md and a test of its own."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from esurge_core import hookspecs
from esurge_core.plugin_manager import HOOK_KINDS

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(
    name for name, obj in vars(hookspecs).items() if name.startswith("esurge_") and callable(obj)
)


def hook_heading(name: str) -> str:
    signature = inspect.signature(getattr(hookspecs, name))
    return f"### `{name}{signature}`".replace("'", "")


def test_every_hookspec_fills_a_component_kind():
    assert sorted(HOOK_KINDS) == HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docs_section_headed_by_its_exact_signature(hook):
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert hook_heading(hook) in docs, f"docs/plugins.md lacks the heading {hook_heading(hook)}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_docstring_follows_the_template(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert ":param register:" in doc
    assert "Called once per process" in doc
    assert ".. versionadded::" in doc


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook):
    registrar = inspect.signature(getattr(hookspecs, hook)).parameters["register"].annotation
    test_sources = "\n".join(
        p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.name != "test_docs.py"
    )
    assert hook in test_sources or registrar in test_sources, f"no test mentions {hook}"
