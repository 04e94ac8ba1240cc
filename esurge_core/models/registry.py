"""The model registry: Hugging Face architecture name -> model builder.

`build_model(config, dtype)` looks up `config["architectures"][0]` (e.g. "LlamaForCausalLM")
and calls the builder registered for it. The built-in families are registered when this
module is imported; plugins add more through `register_model` (the core's
`esurge_register_models` hook hands them `MODEL_REGISTRY.register`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from esurge_core.models.causal_lm import CausalLM
from esurge_core.models.gemma3 import Gemma3ForCausalLM
from esurge_core.models.hf_config import architecture_of
from esurge_core.models.llama import LLAMA_FAMILY_ARCHITECTURES, LlamaFamilyForCausalLM
from esurge_core.models.llama4 import Llama4ForCausalLM
from esurge_core.weights.errors import UnsupportedArchitectureError

#: Builds a model from a Hugging Face config dict and a dtype.
ModelBuilder = Callable[[Mapping[str, Any], Any], CausalLM]


class ModelRegistry:
    """Architecture name -> builder, with errors that list what is supported."""

    def __init__(self) -> None:
        self._builders: dict[str, ModelBuilder] = {}

    def register(self, architecture: str, builder: ModelBuilder, *, replace: bool = False) -> None:
        """Register `builder` for configs whose `architectures[0]` is `architecture`.

        Raises:
            ValueError: the architecture is already registered to another builder and
                `replace` is false.
        """
        existing = self._builders.get(architecture)
        if existing is not None and existing is not builder and not replace:
            raise ValueError(
                f"model architecture {architecture!r} is already registered "
                f"(to {existing!r}); pass replace=True to override it"
            )
        self._builders[architecture] = builder

    def supported(self) -> list[str]:
        """Return every registered architecture name, sorted."""
        return sorted(self._builders)

    def build(self, config: Mapping[str, Any], dtype: Any) -> CausalLM:
        """Build the model `config["architectures"][0]` names, in `dtype`.

        Raises:
            UnsupportedArchitectureError: no builder is registered for the architecture;
                the message lists the supported ones.
        """
        architecture = architecture_of(config)
        builder = self._builders.get(architecture)
        if builder is None:
            supported = self.supported()
            raise UnsupportedArchitectureError(
                architecture,
                supported,
                f"model architecture {architecture!r} (config.json 'architectures') is not "
                f"supported; supported architectures: {', '.join(supported)}. A plugin can add "
                "one through the esurge_register_models hook.",
            )
        return builder(config, dtype)

    def __contains__(self, architecture: object) -> bool:
        return architecture in self._builders


def _register_builtin_models(registry: ModelRegistry) -> None:
    for architecture in LLAMA_FAMILY_ARCHITECTURES:
        registry.register(architecture, LlamaFamilyForCausalLM)
    registry.register("Gemma3ForCausalLM", Gemma3ForCausalLM)
    registry.register("Llama4ForCausalLM", Llama4ForCausalLM)


#: The process-wide registry, holding the built-in families.
MODEL_REGISTRY = ModelRegistry()
_register_builtin_models(MODEL_REGISTRY)


def register_model(architecture: str, builder: ModelBuilder, *, replace: bool = False) -> None:
    """Register `builder` in the process-wide registry (see `ModelRegistry.register`)."""
    MODEL_REGISTRY.register(architecture, builder, replace=replace)


def build_model(config: Mapping[str, Any], dtype: Any = "float32") -> CausalLM:
    """Build a model from a Hugging Face config dict (see `ModelRegistry.build`)."""
    return MODEL_REGISTRY.build(config, dtype)
