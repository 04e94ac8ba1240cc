"""A plugin that imports fine but fails while registering (after registering one thing)."""

from esurge_core import hookimpl


@hookimpl
def esurge_register_schedulers(register):
    register(name="half_done", loader="x.y:Policy")
    raise RuntimeError("registration blew up")
