"""``Request``'s views of prompt + output: ``token_ids_view`` (what the scheduler hands the
KV-cache manager each step, without joining the lists) against the joined list."""

from __future__ import annotations

import pytest

from esurge_core.engine.request import JoinedTokenIds, Request
from esurge_core.sampling.params import SamplingParams


def _request(prompt: list[int], output: list[int]) -> Request:
    request = Request("r", prompt, SamplingParams(max_tokens=8), 0.0, 0, 8)
    request.output_token_ids.extend(output)
    return request


@pytest.mark.parametrize(
    ("prompt", "output"), [([1, 2, 3, 4], [5, 6, 7]), ([1, 2], []), ([9], [8, 7, 6, 5])]
)
def test_view_reads_like_the_joined_list(prompt: list[int], output: list[int]) -> None:
    request = _request(prompt, output)
    joined = prompt + output
    view = request.token_ids_view
    assert len(view) == len(joined)
    assert list(view) == joined
    for start in range(-len(joined) - 1, len(joined) + 2):
        for stop in range(-len(joined) - 1, len(joined) + 2):
            assert view[start:stop] == joined[start:stop]
            assert view[start:stop:2] == joined[start:stop:2]
    for index in range(-len(joined), len(joined)):
        assert view[index] == joined[index]
    with pytest.raises(IndexError):
        view[len(joined)]
    assert request.tokens_between(1, len(joined)) == joined[1:]


def test_view_follows_new_output_without_a_copy() -> None:
    request = _request([1, 2, 3], [4])
    view = request.token_ids_view
    request.output_token_ids.append(5)
    assert len(view) == 5 and view[3:] == [4, 5]
    assert isinstance(view, JoinedTokenIds)
