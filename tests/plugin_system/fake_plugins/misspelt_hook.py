"""A plugin that implements a hook name eSurge does not define (a typo)."""

from esurge_core import hookimpl


@hookimpl
def esurge_register_schedulerz(register):
    register(name="never", loader="x.y:Z")
