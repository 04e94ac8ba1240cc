"""The engine itself runs tensor-parallel: ``eSurge(..., tensor_parallel_size=3)`` on three
(fake CPU) devices gives the same greedy tokens as one device, with sharded weights and KV."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .subprocess_jax import REPO, worker_env

pytestmark = pytest.mark.slow

SCRIPT = """
import json, sys
from esurge_core import eSurge, SamplingParams
tp = int(sys.argv[1])
engine = eSurge("smollm2-135m-instruct", max_model_len=128, max_num_seqs=4, page_size=16,
                kv_cache_memory=32 << 20, tensor_parallel_size=tp)
params = SamplingParams(temperature=0, max_tokens=8)
outputs = engine.generate(["The capital of France is", "def fibonacci(n):"], params)
kv_shards = len(engine.runner.kv_caches[0].sharding.device_set)
q_sharding = str(engine.runner.params["layers"][0]["attn"]["q"].sharding.spec) if tp > 1 else ""
engine.close()
print(json.dumps({"tokens": [o.outputs[0].token_ids for o in outputs], "kv_devices": kv_shards,
                  "q_spec": q_sharding}))
"""


def run(tp: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tp)],
        cwd=REPO,
        env=worker_env(3),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_engine_greedy_tokens_are_the_same_at_tensor_parallel_sizes_1_and_3():
    single, sharded = run(1), run(3)
    assert sharded["tokens"] == single["tokens"]
    assert sharded["kv_devices"] == 3
    assert "tensor" in sharded["q_spec"]
