"""``engine_thread_nice``: the step loop's thread gets the nice value asked for (Linux), and
an engine whose process may not lower it keeps working, with a warning that says so."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from esurge_core.sampling.params import SamplingParams

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")

GREEDY = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)


def test_the_loop_thread_runs_at_the_nice_value_asked_for(make_engine):
    process_nice = os.getpriority(os.PRIO_PROCESS, 0)
    wanted = min(process_nice + 3, 19)  # raising it needs no privilege
    engine = make_engine(engine_thread_nice=wanted, max_model_len=64, max_num_seqs=2)
    out = engine.generate(["Hello"], GREEDY)[0]
    assert len(out.outputs[0].token_ids) == 3
    assert os.getpriority(os.PRIO_PROCESS, engine._thread.native_id) == wanted
    assert os.getpriority(os.PRIO_PROCESS, 0) == process_nice  # the caller's is untouched


def test_a_refused_nice_value_leaves_a_warning_and_a_working_engine(
    make_engine, monkeypatch, caplog
):
    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    engine = make_engine(engine_thread_nice=-5, max_model_len=64, max_num_seqs=2)
    with caplog.at_level(logging.WARNING, logger="esurge_core.engine.esurge"):
        out = engine.generate(["Hello"], GREEDY)[0]
    assert len(out.outputs[0].token_ids) == 3
    assert "engine_thread_nice=-5 could not be set" in caplog.text
    assert "Operation not permitted" in caplog.text
