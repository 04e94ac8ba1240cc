"""SamplingBatch.from_requests: the per-step host arrays and their padding."""

import numpy as np
import pytest

from esurge_core.sampling import SamplingBatch, SamplingParams, SamplingRow
from esurge_core.sampling.batch import NO_LOGPROBS, logprobs_bucket


def row(params=None, *, prompt=(), output=(), seed=0):
    return SamplingRow(params or SamplingParams(), seed, list(prompt), list(output))


def test_padding_rows_are_greedy_without_penalties():
    batch = SamplingBatch.from_requests([row(SamplingParams(temperature=0.7))], 4)
    assert batch.temperature.tolist() == pytest.approx([0.7, 0, 0, 0])
    assert batch.top_p.tolist() == [1, 1, 1, 1]
    assert batch.repetition_penalty.tolist() == [1, 1, 1, 1]
    assert batch.penalty_token_ids.shape == (4, 0)
    assert batch.bias_token_ids.shape == (4, 0)
    assert batch.num_logprobs == NO_LOGPROBS


def test_greedy_rows_get_temperature_zero_and_top_k_off_is_zero():
    batch = SamplingBatch.from_requests([row(SamplingParams(temperature=1e-7, top_k=-1))], 1)
    assert batch.temperature[0] == 0 and batch.top_k[0] == 0


def test_steps_count_generated_tokens():
    batch = SamplingBatch.from_requests([row(output=[5, 6, 7]), row()], 2)
    assert batch.steps.tolist() == [3, 0]


def test_repetition_penalty_rows_carry_prompt_then_output_ids():
    rows = [
        row(SamplingParams(repetition_penalty=1.3), prompt=[1, 2], output=[3]),
        row(SamplingParams(frequency_penalty=0.5), prompt=[9, 9, 9], output=[4, 4]),
        row(prompt=[8], output=[8]),
    ]
    batch = SamplingBatch.from_requests(rows, 4)
    assert batch.penalty_token_ids.shape == (4, 16)
    assert batch.penalty_token_ids[0, :4].tolist() == [1, 2, 3, -1]
    assert batch.penalty_token_ids[1, :3].tolist() == [4, 4, -1]
    assert (batch.penalty_token_ids[2:] == -1).all()
    assert batch.penalty_prompt_lens.tolist() == [2, 0, 0, 0]


def test_min_tokens_blocks_stop_tokens_and_eos_with_minus_infinity():
    params = SamplingParams(min_tokens=2, stop_token_ids=[7], logit_bias={3: 1.5})
    batch = SamplingBatch.from_requests([row(params, output=[1])], 1, eos_token_ids=[0])
    assert batch.bias_token_ids[0, :3].tolist() == [3, 7, 0]
    assert batch.bias_values[0, :3].tolist() == [1.5, -np.inf, -np.inf]


def test_min_tokens_blocking_ends_once_reached_and_respects_ignore_eos():
    reached = SamplingParams(min_tokens=1, stop_token_ids=[7])
    ignoring = SamplingParams(min_tokens=3, stop_token_ids=[7], ignore_eos=True)
    batch = SamplingBatch.from_requests(
        [row(reached, output=[1]), row(ignoring)], 2, eos_token_ids=[0]
    )
    assert (batch.bias_token_ids[0] == -1).all()
    assert batch.bias_token_ids[1].tolist() == [7, -1, -1, -1]


def test_num_logprobs_is_the_bucketed_batch_maximum():
    rows = [row(SamplingParams(logprobs=3)), row(SamplingParams(logprobs=0)), row()]
    assert SamplingBatch.from_requests(rows, 4).num_logprobs == 5
    assert logprobs_bucket(0) == 0 and logprobs_bucket(20) == 20


def test_padded_size_smaller_than_rows_is_rejected():
    with pytest.raises(ValueError, match="padded_size 1 is smaller than the 2 rows"):
        SamplingBatch.from_requests([row(), row()], 1)


def test_seed_words_split_a_64_bit_seed():
    batch = SamplingBatch.from_requests([row(seed=(5 << 32) | 9), row(seed=-1)], 2)
    assert batch.seed_words.tolist() == [[5, 9], [0xFFFFFFFF, 0xFFFFFFFF]]
