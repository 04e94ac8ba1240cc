"""Entry point: declares the ``fcfs`` and ``priority`` policies by import path."""

from __future__ import annotations

from esurge_core.hookspecs import hookimpl
from esurge_core.registrars import SchedulerRegistrar


@hookimpl
def esurge_register_schedulers(register: SchedulerRegistrar) -> None:
    """Register ``fcfs`` and ``priority``."""
    register(
        name="fcfs",
        loader="esurge_schedulers.fcfs:FCFSPolicy",
        description="first come, first served; preempt the newest running request",
    )
    register(
        name="priority",
        loader="esurge_schedulers.priority:PriorityPolicy",
        description="lowest priority value first; preempt the worst (priority, arrival)",
    )
