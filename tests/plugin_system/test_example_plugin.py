"""The example third-party plugin (examples/plugins/esurge-shortest-first), installed for real."""

from __future__ import annotations

from dataclasses import dataclass

import importlib_metadata

from esurge_core.components import ComponentKind
from esurge_core.plugin_manager import PluginManager
from esurge_core.scheduling.policy import SchedulingPolicy


@dataclass(frozen=True)
class Request:
    request_id: str
    arrival_time: float
    num_prompt_tokens: int
    num_computed_tokens: int = 0
    priority: int = 0


def load_policy() -> SchedulingPolicy:
    spec = PluginManager().registry.get(ComponentKind.SCHEDULER, "shortest_first")
    return spec.load()()


def test_example_plugin_is_an_installed_distribution_with_an_esurge_entry_point():
    dist = importlib_metadata.distribution("esurge-shortest-first")
    names = {ep.name for ep in dist.entry_points if ep.group == "esurge"}
    assert names == {"shortest_first"}


def test_example_policy_implements_the_scheduling_policy_protocol():
    assert isinstance(load_policy(), SchedulingPolicy)


def test_example_policy_admits_shortest_prompts_first_then_by_arrival():
    policy = load_policy()
    waiting = [Request("a", 1.0, 300), Request("b", 2.0, 10), Request("c", 0.5, 10)]
    assert [r.request_id for r in sorted(waiting, key=policy.admission_key)] == ["c", "b", "a"]


def test_example_policy_preempts_the_request_with_most_prompt_left():
    policy = load_policy()
    running = [Request("a", 1.0, 300, 290), Request("b", 2.0, 100, 0)]
    assert policy.choose_victim(running).request_id == "b"
    assert policy.may_preempt_for(running[0], running[1]) is False
