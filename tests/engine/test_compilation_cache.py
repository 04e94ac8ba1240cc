"""Compiled steps are kept on disk per machine, and a restarted engine loads them instead of
compiling (``compilation_cache``, on by default)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from esurge_core import compilation_cache
from esurge_core.config import EngineConfig
from esurge_core.frontends.engine_args import add_engine_arguments, engine_kwargs
from esurge_core.packaged_models import cache_root

# One engine's life in a fresh process: the tokens it generates, the step compilations it
# traced, and JAX's persistent-cache hits and misses while it ran.
ENGINE_RUN = textwrap.dedent(
    """
    import json
    import jax.monitoring
    events = {}
    def count(event, **_):
        events[event] = events.get(event, 0) + 1
    jax.monitoring.register_event_listener(count)
    from esurge_core import SamplingParams, eSurge
    engine = eSurge("smollm2-135m-instruct", max_model_len=64, max_num_seqs=2,
                    kv_cache_memory=16 << 20)
    out = engine.generate(["The capital of France is", "def fibonacci(n):"],
                          SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    print(json.dumps({
        "tokens": [list(o.outputs[0].token_ids) for o in out],
        "steps": engine.runner.num_compilations,
        "hits": events.get("/jax/compilation_cache/cache_hits", 0),
        "misses": events.get("/jax/compilation_cache/cache_misses", 0),
        "folder": jax.config.jax_compilation_cache_dir,
        "max_size": jax.config.jax_compilation_cache_max_size,
    }))
    engine.close()
    """
)


def _cache_root_with_a_fresh_xla_folder(tmp_path):
    """An ``ESURGE_CACHE`` whose models, tokenizers and native kernels are this session's
    (building them again would take a minute) and whose ``xla`` folder is new."""
    root = tmp_path / "esurge"
    root.mkdir()
    for shared in ("models", "tokenizers", "native"):
        target = cache_root() / shared
        target.mkdir(parents=True, exist_ok=True)
        (root / shared).symlink_to(target, target_is_directory=True)
    return root


def _run_engine(root) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["ESURGE_CACHE"] = str(root)
    result = subprocess.run(
        [sys.executable, "-c", ENGINE_RUN],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_restarted_engine_loads_its_compiled_steps_instead_of_compiling(tmp_path):
    root = _cache_root_with_a_fresh_xla_folder(tmp_path)
    first = _run_engine(root)
    folder = root / "xla" / compilation_cache.machine_cache_dir().name
    assert first["folder"] == str(folder)
    assert first["max_size"] == compilation_cache.MAX_CACHE_BYTES  # bounded, and locked
    assert first["steps"] >= 2 and first["misses"] >= first["steps"] and first["hits"] == 0
    assert len(list(folder.glob("jit_step-*-cache"))) == first["steps"]
    assert folder.stat().st_mode & 0o077 == 0  # the owner's alone: it holds code to run

    again = _run_engine(root)
    assert again["tokens"] == first["tokens"]
    assert again["steps"] == first["steps"]  # traced as before, but not compiled:
    assert again["hits"] >= again["steps"] and again["misses"] == 0


def test_a_folder_the_process_already_chose_is_kept(tmp_path, monkeypatch):
    chosen = str(tmp_path / "chosen")
    monkeypatch.setenv("ESURGE_CACHE", str(tmp_path / "esurge"))
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", chosen)
    try:
        assert str(compilation_cache.use_compilation_cache()) == chosen
        assert jax.config.jax_compilation_cache_dir == chosen
        assert not (tmp_path / "esurge").exists()
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)


def test_the_folder_is_keyed_by_the_cpu_and_jaxlib(tmp_path, monkeypatch):
    monkeypatch.setenv("ESURGE_CACHE", str(tmp_path))
    here = compilation_cache.machine_cache_dir()
    assert here.parent == tmp_path / "xla"
    monkeypatch.setattr(compilation_cache, "cpu_signature", lambda: "model name : another")
    assert compilation_cache.machine_cache_dir() != here


def test_the_setting_is_on_by_default_and_the_cli_turns_it_off_or_compiles_ahead():
    assert EngineConfig().runtime.compilation_cache is True
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    assert "compilation_cache" not in engine_kwargs(parser.parse_args([]))
    off = engine_kwargs(parser.parse_args(["--no-compilation-cache"]))
    assert off["compilation_cache"] is False
    assert EngineConfig.from_kwargs(**off).runtime.compilation_cache is False
    ahead = engine_kwargs(parser.parse_args(["--use-aot-forward"]))
    assert EngineConfig.from_kwargs(**ahead).runtime.use_aot_forward is True
    assert "use_aot_forward" not in engine_kwargs(parser.parse_args([]))
