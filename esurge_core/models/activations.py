"""Feed-forward activations by their Hugging Face names (`hidden_act` / `hidden_activation`)."""

from __future__ import annotations

from collections.abc import Callable

import jax

from esurge_core.weights.errors import UnsupportedConfigError

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Return the activation function Hugging Face calls `name`.

    Raises:
        UnsupportedConfigError: `name` is not one of the supported activations.
    """
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise UnsupportedConfigError(
            f"activation {name!r} is not supported; supported: {sorted(_ACTIVATIONS)}"
        ) from None
