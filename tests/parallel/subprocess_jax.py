"""Run a `tests.parallel.workers` command in a fresh interpreter and read its JSON result.

JAX reads XLA_FLAGS (the fake CPU device count) and joins a `jax.distributed` job only at
start-up, so every multi-device check gets its own process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def worker_env(device_count: int, **extra: str) -> dict[str, str]:
    """The environment of a worker with `device_count` fake CPU devices."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESURGE_")}
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={device_count}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        **extra,
    )
    return env


def _command(name: str, args: dict) -> list[str]:
    return [sys.executable, "-m", "tests.parallel.workers", name, json.dumps(args)]


def _result(stdout: str, stderr: str, returncode: int, name: str) -> dict:
    if returncode != 0:
        raise AssertionError(f"worker {name!r} exited {returncode}:\n{stderr[-4000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def run_worker(name: str, args: dict, *, device_count: int, timeout: float = 300) -> dict:
    """Run one worker command with `device_count` CPU devices; return its JSON result."""
    done = subprocess.run(
        _command(name, args),
        cwd=REPO,
        env=worker_env(device_count),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return _result(done.stdout, done.stderr, done.returncode, name)


def free_port() -> int:
    """A TCP port that is free on localhost right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_multihost(
    name: str, args: dict, *, num_processes: int, devices_per_process: int, timeout: float = 300
) -> list[dict]:
    """Run a worker as a `num_processes`-process job on localhost; one result per process."""
    address = f"127.0.0.1:{free_port()}"
    procs = [
        subprocess.Popen(
            _command(name, args),
            cwd=REPO,
            env=worker_env(
                devices_per_process,
                ESURGE_COORDINATOR_ADDRESS=address,
                ESURGE_NUM_PROCESSES=str(num_processes),
                ESURGE_PROCESS_ID=str(rank),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(num_processes)
    ]
    results = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            results.append(_result(stdout, stderr, proc.returncode, name))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return results
