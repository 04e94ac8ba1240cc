"""A plugin that claims the name 'xla', already taken by esurge-attention-xla."""

from esurge_core import hookimpl
from esurge_core.capabilities import Capabilities


@hookimpl
def esurge_register_attention_backends(register):
    register(
        name="xla",
        loader="other_package.kernel:Backend",
        capabilities=Capabilities.of(platforms=["cpu"]),
    )
