"""Errors raised while turning a checkpoint (config + tensors) into model parameters.

Each message names the offending file, tensor or architecture and says what was expected,
so a user can fix the checkpoint or pick a supported model without reading the code.
"""

from __future__ import annotations

from collections.abc import Sequence

from esurge_core.errors import ESurgeError


class WeightLoadError(ESurgeError):
    """A checkpoint could not be loaded into a model."""


class CheckpointNotFoundError(WeightLoadError, FileNotFoundError):
    """The checkpoint folder, its config.json or its safetensors files are missing or unreadable."""


class MissingTensorError(WeightLoadError, KeyError):
    """A tensor the model needs is absent from the checkpoint."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        #: The Hugging Face name of the missing tensor.
        self.tensor_name = name

    def __str__(self) -> str:
        # KeyError quotes its argument; show the plain message instead.
        return str(self.args[0])


class TensorShapeError(WeightLoadError, ValueError):
    """A tensor of the checkpoint has a shape that disagrees with the model's config."""

    def __init__(
        self, name: str, expected: tuple[int, ...], actual: tuple[int, ...], message: str
    ) -> None:
        super().__init__(message)
        #: The Hugging Face name of the tensor.
        self.tensor_name = name
        #: The shape the config implies.
        self.expected = expected
        #: The shape found in the checkpoint.
        self.actual = actual


class UnsupportedArchitectureError(WeightLoadError, LookupError):
    """config["architectures"][0] names an architecture no registered model implements.

    Raised as `UnsupportedArchitectureError(architecture, supported, message)`, or with the
    message alone when the caller does not know the two (then both attributes are empty).
    """

    def __init__(
        self,
        architecture_or_message: str,
        supported: Sequence[str] = (),
        message: str | None = None,
    ) -> None:
        if message is None:
            super().__init__(architecture_or_message)
            architecture = ""
        else:
            super().__init__(message)
            architecture = architecture_or_message
        #: The architecture the config asked for ("" when not given).
        self.architecture = architecture
        #: Every supported architecture, sorted (empty when not given).
        self.supported = sorted(supported)


class UnsupportedConfigError(WeightLoadError, ValueError):
    """The architecture is supported but a config option it uses is not (e.g. a RoPE type)."""
