"""Feed-forward activations by their Hugging Face names (`hidden_act` / `hidden_activation`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax

from esurge_core.weights.errors import UnsupportedConfigError


@dataclass(frozen=True)
class Activation:
    """An activation function with its canonical name (the same name for Hugging Face's
    aliases, e.g. ``silu`` for ``swish``), by which a matmul backend may fuse it into a gated
    MLP's product (``esurge_core.matmul.dispatch.gated_matmul``)."""

    name: str
    fn: Callable[[jax.Array], jax.Array]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fn(x)


_SILU = Activation("silu", jax.nn.silu)
_GELU_TANH = Activation("gelu_tanh", lambda x: jax.nn.gelu(x, approximate=True))
_ACTIVATIONS: dict[str, Activation] = {
    "silu": _SILU,
    "swish": _SILU,
    "gelu": Activation("gelu", lambda x: jax.nn.gelu(x, approximate=False)),
    "gelu_pytorch_tanh": _GELU_TANH,
    "gelu_new": _GELU_TANH,
    "relu": Activation("relu", jax.nn.relu),
}


def activation(name: str) -> Activation:
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
