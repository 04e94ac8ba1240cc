"""``huge_page_weights``: the engine moves its weights into transparent huge pages where the
system can (on by default), generates the same tokens either way, and moves nothing when
asked not to."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from esurge_core.host_huge_pages import back_with_huge_pages, huge_page_size
from esurge_core.sampling.params import SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)


def _system_moves_pages() -> bool:
    return back_with_huge_pages([jnp.ones(8 << 20, jnp.uint8)]) > 0


def test_weights_in_huge_pages_generate_the_same_tokens(make_engine):
    small = make_engine(huge_page_weights=False, max_model_len=64, max_num_seqs=2)
    huge = make_engine(max_model_len=64, max_num_seqs=2)  # the default: on
    assert small.runner.huge_page_bytes == 0
    if huge_page_size() is None or not _system_moves_pages():
        assert huge.runner.huge_page_bytes == 0
        pytest.skip("this system moves nothing into huge pages")
    # Whole huge pages under the params, and the gaps under 2 MiB between them.
    leaves = jax.tree.leaves(huge.runner.params)
    most = sum(leaf.nbytes for leaf in leaves) + len(leaves) * huge_page_size()
    assert 0 < huge.runner.huge_page_bytes <= most
    prompts = ["The capital of France is", "1, 2, 3,"]
    tokens = [out.outputs[0].token_ids for out in small.generate(prompts, GREEDY)]
    assert [out.outputs[0].token_ids for out in huge.generate(prompts, GREEDY)] == tokens
