"""Property-based tests: random request lifecycles against a shadow model of page contents.

Random sequences of admissions (with prefix lookup), chunked prefill, decoding, finishing,
preemption (free, then re-admission that mostly hits its own pages) and aborts run on a tiny
pool, so allocations fail, pages are shared and cached pages are evicted all the time. After
every operation the manager's own invariants must hold, and every page a request holds at a
computed position must contain exactly the tokens (and tenant) that position means for the
request: the shadow model records what each page was written with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esurge_core.kv_cache import KVCacheManager

from .helpers import FULL, chunked, sliding

PAGE_SIZE = 2
GROUPS = {
    "full": (FULL,),
    "gemma3-like": (FULL, sliding(5)),
    "llama4-like": (chunked(6), FULL),
    "two-windows": (sliding(3, (0,)), sliding(7, (1,))),
}
PREFIXES = ([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 10, 11], [20, 21, 22, 23, 24, 25, 26])

add = st.tuples(
    st.just("add"),
    st.integers(0, len(PREFIXES) - 1),
    st.lists(st.integers(0, 3), max_size=5),
    st.sampled_from([None, "tenant-a", "tenant-b"]),
)
step = st.tuples(st.just("step"), st.integers(0, 7), st.integers(1, 6), st.integers(0, 3))
end = st.tuples(st.sampled_from(["finish", "preempt", "abort"]), st.integers(0, 7))
operations = st.lists(st.one_of(add, step, step, step, step, end), min_size=20, max_size=80)


@dataclass
class Request:
    tokens: list[int]
    salt: str | None
    computed: int = 0
    started: bool = False
    step_start: int = 0  # first position computed by the latest allocation


@dataclass
class Simulation:
    manager: KVCacheManager
    requests: dict[str, Request] = field(default_factory=dict)
    #: page -> (group, salt, the request prefix the page's last slot completes)
    shadow: dict[int, tuple[int, str | None, tuple[int, ...]]] = field(default_factory=dict)
    next_id: int = 0

    def pick(self, index: int) -> str | None:
        live = sorted(self.requests)
        return live[index % len(live)] if live else None

    def add(self, prefix: int, suffix: list[int], salt: str | None) -> None:
        self.requests[f"r{self.next_id}"] = Request([*PREFIXES[prefix], *suffix], salt)
        self.next_id += 1

    def step(self, request_id: str, chunk: int, token: int) -> None:
        m = self.manager
        request = self.requests[request_id]
        if not request.started:
            computed = m.lookup_prefix(request_id, request.tokens, cache_salt=request.salt)
            assert computed % PAGE_SIZE == 0
            assert computed < len(request.tokens)
        else:
            computed = request.computed
            if computed == len(request.tokens):
                request.tokens.append(token)  # decode: the sampled token is the next input
        new = min(chunk, len(request.tokens) - computed)
        before_tables = [list(t) for t in m.page_ids(request_id)] if request_id in m else None
        before_stats = m.stats()
        if not m.allocate(request_id, request.tokens, computed, new, cache_salt=request.salt):
            assert m.num_free_pages == before_stats.num_free_pages
            assert m.stats().num_cached_pages == before_stats.num_cached_pages
            if before_tables is not None:
                assert [list(t) for t in m.page_ids(request_id)] == before_tables
            return
        tables = m.page_ids(request_id)
        first_new = len(before_tables[0]) if request.started else computed // PAGE_SIZE
        for table in tables:
            for page in table[first_new:]:
                self.shadow.pop(page, None)  # a fresh page: its old contents are gone
        request.started = True
        request.step_start = computed
        request.computed = computed + new
        self.record_and_check(request_id)

    def record_and_check(self, request_id: str) -> None:
        request = self.requests[request_id]
        m = self.manager
        for group, table in enumerate(m.page_ids(request_id)):
            # Every key the latest step's queries can see must still be on a real page.
            first_visible = m.groups[group].first_visible_position(request.step_start)
            for position in range(first_visible // PAGE_SIZE, len(table)):
                assert table[position], f"{request_id} lost visible page {position}"
            for position, page in enumerate(table):
                stop = (position + 1) * PAGE_SIZE
                if not page or stop > request.computed:
                    continue
                expected = (group, request.salt, tuple(request.tokens[:stop]))
                assert self.shadow.setdefault(page, expected) == expected, (
                    f"page {page} of {request_id} holds {self.shadow[page]}, expected {expected}"
                )

    def end(self, kind: str, request_id: str) -> None:
        self.manager.free(request_id)
        if kind == "preempt":
            request = self.requests[request_id]
            request.started = False
            request.computed = 0
        else:
            del self.requests[request_id]

    def check(self) -> None:
        self.manager.check_invariants()
        for request_id, request in self.requests.items():
            if request.started:
                self.record_and_check(request_id)


def run(groups: str, capacity: float, ops: list[tuple]) -> None:
    sim = Simulation(
        KVCacheManager(
            GROUPS[groups], num_pages=16, page_size=PAGE_SIZE, prefix_cache_capacity=capacity
        )
    )
    for op in ops:
        if op[0] == "add":
            sim.add(*op[1:])
        else:
            request_id = sim.pick(op[1])
            if request_id is None:  # nobody to act on: admit someone instead
                sim.add(op[1] % len(PREFIXES), [], None)
                continue
            if op[0] == "step":
                sim.step(request_id, op[2], op[3])
            else:
                sim.end(op[0], request_id)
        sim.check()
    for request_id in list(sim.requests):
        sim.end("finish", request_id)
    m = sim.manager
    m.check_invariants()
    assert m.num_free_pages == m.num_usable_pages, "pages leaked after every request ended"
    assert m.stats().num_used_pages == 0


@pytest.mark.parametrize("groups", sorted(GROUPS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, capacity=st.sampled_from([1.0, 0.5, 0.0]))
def test_random_lifecycles_keep_every_invariant(groups: str, capacity: float, ops: list[tuple]):
    run(groups, capacity, ops)


@settings(max_examples=40, deadline=None)
@given(suffix=st.lists(st.integers(0, 3), max_size=6), chunk=st.integers(1, 5))
def test_identical_prompts_of_different_tenants_never_share_a_page(suffix, chunk):
    m = KVCacheManager(GROUPS["gemma3-like"], num_pages=64, page_size=PAGE_SIZE)
    prompt = [*PREFIXES[0], *suffix]
    for tenant in ("tenant-a", "tenant-b"):
        computed = m.lookup_prefix(tenant, prompt, cache_salt=tenant)
        assert computed == 0
        while computed < len(prompt):
            new = min(chunk, len(prompt) - computed)
            assert m.allocate(tenant, prompt, computed, new, cache_salt=tenant)
            computed += new
    for group in range(2):
        a = {p for p in m.page_ids("tenant-a")[group] if p}
        b = {p for p in m.page_ids("tenant-b")[group] if p}
        assert not a & b
