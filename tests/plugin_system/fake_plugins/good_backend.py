"""A well-behaved plugin: one attention backend usable only on TPU."""

from esurge_core import hookimpl
from esurge_core.capabilities import Capabilities


@hookimpl
def esurge_register_attention_backends(register):
    register(
        name="fancy",
        loader="tests.plugin_system.fake_plugins.fancy_kernel:FancyBackend",
        capabilities=Capabilities.of(
            platforms=["tpu"],
            dtypes=["bfloat16"],
            head_dims=[128, 256],
            page_size_multiple=16,
            auto_priority={"tpu": 200},
        ),
        description="a TPU-only backend for tests",
    )
