"""glibc malloc settings the ``esurge`` command starts with (``esurge_core.host_malloc``)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from esurge_core.host_malloc import (
    OPT_OUT_VARIABLE,
    TUNED_MALLOC_ENV,
    malloc_is_tuned,
    tuned_malloc_env,
)

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")

# Prints the malloc variables this process started with, after asking to be re-executed.
PROBE = (
    "import json, os, sys\n"
    "from esurge_core.host_malloc import reexec_with_tuned_malloc\n"
    "print('started', flush=True)\n"
    "reexec_with_tuned_malloc()\n"
    "keys = [k for k in os.environ if k.startswith('MALLOC_')]\n"
    "print(json.dumps({k: os.environ[k] for k in keys}))\n"
)


def _probe(env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    base.pop(OPT_OUT_VARIABLE, None)
    base.pop("ESURGE_MALLOC_TUNED", None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.splitlines()
    return lines[:-1], json.loads(lines[-1])


@needs_glibc
def test_env_adds_every_missing_variable_and_keeps_the_callers():
    env = tuned_malloc_env({"PATH": "/bin", "MALLOC_TOP_PAD_": "4096"})
    assert env is not None
    assert env["PATH"] == "/bin"
    assert env["MALLOC_TOP_PAD_"] == "4096"
    for key in TUNED_MALLOC_ENV.keys() - {"MALLOC_TOP_PAD_"}:
        assert env[key] == TUNED_MALLOC_ENV[key]
    assert malloc_is_tuned(env)


def test_nothing_to_do_when_opted_out_set_already_or_reexecuted():
    assert tuned_malloc_env({OPT_OUT_VARIABLE: "0"}) is None
    assert tuned_malloc_env(dict(TUNED_MALLOC_ENV)) is None
    assert tuned_malloc_env({"ESURGE_MALLOC_TUNED": "1"}) is None
    assert not malloc_is_tuned({"MALLOC_TOP_PAD_": "1"})


# Mallocs, touches and frees a 40 MiB block ten times; prints the page faults of the last nine.
FAULTS_PROBE = (
    "import ctypes, resource\n"
    "libc = ctypes.CDLL(None)\n"
    "libc.malloc.restype = ctypes.c_void_p\n"
    "libc.free.argtypes = [ctypes.c_void_p]\n"
    "size = 40 << 20\n"
    "def once():\n"
    "    p = libc.malloc(size)\n"
    "    ctypes.memset(p, 1, size)\n"
    "    libc.free(p)\n"
    "once()\n"
    "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
    "for _ in range(9):\n"
    "    once()\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
)


@needs_glibc
@pytest.mark.parametrize("tuned", [True, False])
def test_freed_blocks_are_reused_without_page_faults_only_with_the_settings(tuned):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    if tuned:
        env.update(TUNED_MALLOC_ENV)
    result = subprocess.run(
        [sys.executable, "-c", FAULTS_PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    faults = int(result.stdout.strip())
    pages = 9 * (40 << 20) // 4096
    if tuned:
        assert faults < pages // 100, faults  # the block stays in the heap, already mapped
    else:
        assert faults > pages // 2, faults  # mmap'd and unmapped every time


@needs_glibc
def test_process_restarts_once_with_the_settings():
    started, variables = _probe({})
    assert started == ["started", "started"]  # the original, then the re-executed process
    assert variables == TUNED_MALLOC_ENV


@needs_glibc
def test_opt_out_starts_once_without_the_settings():
    started, variables = _probe({OPT_OUT_VARIABLE: "0"})
    assert started == ["started"]
    assert variables == {}


@needs_glibc
def test_console_entry_point_runs_the_command_under_the_settings():
    code = (
        "import json, os, sys\n"
        "from esurge_core.cli import console_main\n"
        "sys.argv = ['esurge', 'version']\n"
        "code = console_main()\n"
        "print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('MALLOC_')}))\n"
        "sys.exit(code)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop(OPT_OUT_VARIABLE, None)
    env.pop("ESURGE_MALLOC_TUNED", None)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("esurge-core")
    assert json.loads(lines[-1]) == TUNED_MALLOC_ENV
