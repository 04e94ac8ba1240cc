"""Reading values out of a Hugging Face `config.json` dict, with errors that name the field.

The models take the plain dict (as `json.load` or the GGUF loader produce it), not a
`transformers.PretrainedConfig`, so the engine never needs transformers at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from esurge_core.weights.errors import UnsupportedConfigError

_MISSING = object()


def config_value(config: Mapping[str, Any], key: str, default: Any = _MISSING) -> Any:
    """Return `config[key]`, or `default` when the key is absent or null.

    Raises:
        UnsupportedConfigError: the key is absent (or null) and no default was given.
    """
    value = config.get(key)
    if value is not None:
        return value
    if default is _MISSING:
        arch = architecture_of(config)
        raise UnsupportedConfigError(
            f"config.json of a {arch} model has no {key!r}; it is required to build the model. "
            "Check that the folder holds a complete Hugging Face config."
        )
    return default


def architecture_of(config: Mapping[str, Any]) -> str:
    """Return `config["architectures"][0]`, or "<unknown>" when the config names none."""
    architectures = config.get("architectures") or []
    return str(architectures[0]) if architectures else "<unknown>"


def head_dim_of(config: Mapping[str, Any]) -> int:
    """Return the attention head size: `head_dim`, or `hidden_size // num_attention_heads`."""
    head_dim = config.get("head_dim")
    if head_dim is not None:
        return int(head_dim)
    return int(config_value(config, "hidden_size")) // int(
        config_value(config, "num_attention_heads")
    )
