"""Two CPU processes (2 devices each, gloo collectives) form one 4-device tensor-parallel mesh.

Each process joins through `initialize_distributed` from the ESURGE_* environment; process 0
broadcasts the prompts (it is the scheduler); both run the same compiled steps and must
produce the greedy tokens of an unsharded single-process run.
"""

from __future__ import annotations

import pytest

from tests.parallel.subprocess_jax import run_multihost, run_worker
from tests.parallel.tiny_configs import llama


@pytest.fixture(scope="module")
def job() -> list[dict]:
    """The results of both processes of the 2-host job."""
    args = {"config": llama(), "tp": 4}
    return run_multihost("multihost", args, num_processes=2, devices_per_process=2)


def test_two_processes_form_one_four_device_mesh(job):
    assert [(r["process_index"], r["process_count"]) for r in job] == [(0, 2), (1, 2)]
    assert all(r["global_devices"] == 4 and r["local_devices"] == 2 for r in job)


def test_every_process_sees_the_single_process_greedy_tokens(job):
    single = run_worker("single_process_tokens", {"config": llama()}, device_count=1)
    assert job[0]["tokens"] == single["tokens"]
    assert job[1]["tokens"] == single["tokens"]
    assert job[0]["logits_sum"] == pytest.approx(single["logits_sum"], abs=1e-3)
