"""Engine behaviour on SmolLM2: seeded sampling, scheduling order, streaming, abort,
and no recompilation in the steady state."""

from __future__ import annotations

import time

import pytest

from esurge_core.sampling.params import SamplingParams

from .prompts import RAW_PROMPTS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(make_engine):
    return make_engine(page_size=16, max_num_batched_tokens=64, max_num_seqs=8, max_model_len=256)


def run_until_done(engine, max_steps: int = 2000) -> list:
    finished = []
    for _ in range(max_steps):
        if not engine.has_unfinished_requests():
            return finished
        finished += [o.request_id for o in engine.step() if o.finished]
    raise AssertionError("requests did not finish")


def test_same_seed_gives_the_same_output_alone_or_in_any_batch(engine):
    params = SamplingParams(temperature=1.0, top_p=0.95, seed=1234, max_tokens=16)
    alone = engine.generate([RAW_PROMPTS[2]], params)[0].outputs[0].token_ids
    batch = engine.generate(
        RAW_PROMPTS[:5],
        [SamplingParams(temperature=0.8, max_tokens=16)] * 2
        + [params]
        + [SamplingParams(temperature=0, max_tokens=16)] * 2,
    )
    other_position = engine.generate(
        [RAW_PROMPTS[0], RAW_PROMPTS[2]], [SamplingParams(temperature=0.5, max_tokens=16), params]
    )
    assert batch[2].outputs[0].token_ids == alone
    assert other_position[1].outputs[0].token_ids == alone


def test_different_seeds_give_different_outputs(engine):
    outputs = [
        engine.generate(
            [RAW_PROMPTS[2]], SamplingParams(temperature=1.0, seed=seed, max_tokens=16)
        )[0]
        for seed in (1, 2, 3)
    ]
    assert len({tuple(o.outputs[0].token_ids) for o in outputs}) > 1


def test_n_choices_share_the_prompt_and_differ(engine):
    output = engine.generate(
        [RAW_PROMPTS[9]], SamplingParams(n=3, temperature=1.0, seed=5, max_tokens=12)
    )[0]
    assert [c.index for c in output.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in output.outputs}) > 1


def test_streamed_deltas_concatenate_to_the_final_text(engine):
    params = SamplingParams(temperature=0, max_tokens=24)
    deltas, final = [], None
    for output in engine.stream(RAW_PROMPTS[1], params):
        deltas.append(output.outputs[0].delta_text)
        final = output
    assert final.finished
    assert "".join(deltas) == final.outputs[0].text
    assert final.outputs[0].text == engine.generate([RAW_PROMPTS[1]], params)[0].outputs[0].text


def test_stop_strings_never_appear_in_streamed_text(engine):
    unstopped = engine.generate([RAW_PROMPTS[1]], SamplingParams(temperature=0, max_tokens=24))[0]
    text = unstopped.outputs[0].text
    stop = text.strip().split()[2]  # a word the model will produce
    params = SamplingParams(temperature=0, max_tokens=24, stop=[stop])
    streamed = "".join(o.outputs[0].delta_text for o in engine.stream(RAW_PROMPTS[1], params))
    assert stop not in streamed
    assert text.startswith(streamed)
    final = engine.generate([RAW_PROMPTS[1]], params)[0].outputs[0]
    assert final.finish_reason == "stop" and final.stop_reason == stop


def test_abort_mid_stream_frees_every_page(engine):
    baseline = engine.kv_cache.stats().num_used_pages
    stream = engine.stream(RAW_PROMPTS[8], SamplingParams(temperature=0, max_tokens=200))
    for index, _ in enumerate(stream):
        if index == 3:
            break
    stream.close()
    deadline = time.monotonic() + 30
    while engine.has_unfinished_requests() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine.has_unfinished_requests()
    assert engine.kv_cache.stats().num_used_pages == baseline
    engine.kv_cache.check_invariants()


def test_priority_request_into_a_full_engine_finishes_first_and_preempts(make_engine):
    engine = make_engine(
        page_size=16,
        max_num_batched_tokens=64,
        max_num_seqs=2,
        max_model_len=256,
        scheduler="priority",
    )
    long_run = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    engine.add_request(RAW_PROMPTS[0], long_run, request_id="low-1", priority=5)
    engine.add_request(RAW_PROMPTS[1], long_run, request_id="low-2", priority=5)
    for _ in range(4):
        engine.step()
    engine.add_request(
        RAW_PROMPTS[3],
        SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
        request_id="high",
        priority=0,
    )
    order = run_until_done(engine)
    assert order[0] == "high"
    assert engine.scheduler.num_preemptions >= 1


def test_fcfs_keeps_arrival_order(make_engine):
    engine = make_engine(page_size=16, max_num_batched_tokens=64, max_num_seqs=1, max_model_len=256)
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    for name in ("first", "second", "third"):
        engine.add_request(RAW_PROMPTS[0], params, request_id=name)
    assert run_until_done(engine) == ["first", "second", "third"]


def test_no_recompilation_in_the_steady_state(make_engine):
    engine = make_engine(
        page_size=16,
        max_num_batched_tokens=64,
        max_num_seqs=8,
        max_model_len=256,
        enable_prefix_caching=False,
    )

    def workload() -> int:
        params = [
            SamplingParams(
                temperature=0.0 if i % 2 else 0.7, seed=i, max_tokens=12 + i, ignore_eos=True
            )
            for i in range(len(RAW_PROMPTS))
        ]
        for prompt, p in zip(RAW_PROMPTS, params):
            engine.add_request(prompt, p)
        steps = 0
        while engine.has_unfinished_requests():
            engine.step()
            steps += 1
        return steps

    workload()  # warm-up: compiles every bucket this workload reaches
    compiled = engine.runner.num_compilations
    steps = sum(workload() for _ in range(3))
    assert steps >= 100
    assert engine.runner.num_compilations == compiled


def test_public_names_import_from_the_package_root():
    from esurge_core import SamplingParams as RootParams
    from esurge_core import eSurge as RootEngine
    from esurge_core.engine.esurge import eSurge

    assert RootEngine is eSurge and RootParams is SamplingParams


def test_generate_schedules_all_its_prompts_in_one_step(engine):
    # Queued together before the loop looks: the idle engine prefills all eight in its first
    # step (8 x 7 tokens within max_num_batched_tokens=64, max_num_seqs=8) instead of
    # stepping on the first one alone while the others arrive.
    engine.generate([{"prompt_token_ids": [42, 43]}], SamplingParams(max_tokens=1))  # started
    for round_ in range(5):
        before = engine.num_steps
        prompts = [{"prompt_token_ids": [round_, 100 + i, *range(200, 205)]} for i in range(8)]
        outputs = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=1))
        assert [len(o.outputs[0].token_ids) for o in outputs] == [1] * 8
        assert engine.num_steps - before == 1


def test_generate_with_one_invalid_prompt_raises_and_leaves_nothing_queued(engine):
    good = {"prompt_token_ids": [7, 8, 9]}
    bad = {"prompt_token_ids": [1, 2, 10**6]}
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.generate([good, good, bad], SamplingParams(max_tokens=50))
    deadline = time.monotonic() + 30
    while engine.tracked_request_ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.tracked_request_ids() == []
    assert not engine.has_unfinished_requests()


def test_prompt_token_ids_outside_the_vocabulary_are_rejected(engine):
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 49152\)"):
        engine.add_request({"prompt_token_ids": [1, 2, 10**6]})


def test_a_prompt_that_fills_max_model_len_is_rejected_with_the_numbers(engine):
    with pytest.raises(ValueError, match="the prompt has 256 tokens but max_model_len is 256"):
        engine.add_request({"prompt_token_ids": [1] * 256})


def test_unknown_attention_backend_lists_the_installed_ones(make_engine):
    from esurge_core.errors import UnknownComponentError

    with pytest.raises(UnknownComponentError, match=r"xla \(esurge-attention-xla"):
        make_engine(attention="flash", max_model_len=256)


def test_use_aot_forward_compiles_every_bucket_up_front(make_engine):
    engine = make_engine(
        page_size=16,
        max_num_batched_tokens=16,
        max_num_seqs=8,
        max_model_len=64,
        min_input_pad=8,
        use_aot_forward=True,
    )
    compiled = engine.runner.num_compilations
    assert compiled == len(engine.runner.bucket_shapes()) > 1
    engine.generate(RAW_PROMPTS[:6], SamplingParams(temperature=0, max_tokens=8))
    assert engine.runner.num_compilations == compiled


def test_a_kernel_whose_work_follows_kv_lens_gets_one_page_table_width(make_engine):
    # 64-token contexts in pages of 16: xla's work follows the table's width, so it gets
    # power-of-two widths (a compiled step each); the cpu kernel gets the one widest table
    sizes = {"page_size": 16, "max_num_batched_tokens": 16, "max_num_seqs": 8}
    sizes.update(max_model_len=64, min_input_pad=1)
    cpu = make_engine(attention="cpu", **sizes)
    xla = make_engine(attention="xla", **sizes)
    assert cpu.runner.page_buckets == (4,)
    assert xla.runner.page_buckets == (1, 2, 4)
    assert len(xla.runner.bucket_shapes()) == 3 * len(cpu.runner.bucket_shapes())
    prompts, params = RAW_PROMPTS[:3], SamplingParams(temperature=0, max_tokens=6)
    got = [o.outputs[0].token_ids for o in cpu.generate(prompts, params)]
    assert got == [o.outputs[0].token_ids for o in xla.generate(prompts, params)]


def test_without_tensor_parallelism_the_engine_holds_q_k_v_and_gate_up_fused(engine):
    for layer in engine.runner.params["layers"]:
        assert sorted(k for k in layer["attn"] if k in ("q", "k", "v", "qkv")) == ["qkv"]
        assert sorted(k for k in layer["mlp"] if k in ("gate", "up", "gate_up")) == ["gate_up"]
    hidden, heads, kv_heads, head_dim = 576, 9, 3, 64  # SmolLM2-135M
    assert engine.runner.params["layers"][0]["attn"]["qkv"].shape == (
        hidden,
        (heads + 2 * kv_heads) * head_dim,
    )
