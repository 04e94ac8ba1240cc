"""eSurge models: JAX decoders over a paged KV cache, built from Hugging Face configs.

Public entry points: `build_model(config, dtype)` (registry keyed by
`config["architectures"][0]`), `register_model`, and the `CausalLM` interface.
"""

from esurge_core.models.causal_lm import CausalLM
from esurge_core.models.registry import (
    MODEL_REGISTRY,
    ModelBuilder,
    ModelRegistry,
    build_model,
    register_model,
)

__all__ = [
    "MODEL_REGISTRY",
    "CausalLM",
    "ModelBuilder",
    "ModelRegistry",
    "build_model",
    "register_model",
]
