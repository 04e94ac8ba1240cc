"""Entry point: declares the policy by import path, imports nothing else."""

from esurge_core import hookimpl


@hookimpl
def esurge_register_schedulers(register):
    """Register the ``shortest_first`` scheduling policy."""
    register(
        name="shortest_first",
        loader="esurge_shortest_first.policy:ShortestFirstPolicy",
        description="admit the shortest prompts first; preempt the longest remaining work",
    )
