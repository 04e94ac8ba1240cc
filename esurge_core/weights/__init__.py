"""Checkpoint loading: Hugging Face folders (safetensors) and GGUF files, and their errors.

Every loader yields the same pair, an HF-style config dict and a mapping of HF-named
tensors, which `model.load_params` turns into parameters.
"""

from esurge_core.weights.errors import (
    CheckpointNotFoundError,
    MissingTensorError,
    TensorShapeError,
    UnsupportedArchitectureError,
    UnsupportedConfigError,
    WeightLoadError,
)
from esurge_core.weights.hf_folder import (
    SafetensorsCheckpoint,
    load_hf_folder,
    load_hf_model,
    read_hf_config,
)

__all__ = [
    "CheckpointNotFoundError",
    "MissingTensorError",
    "SafetensorsCheckpoint",
    "TensorShapeError",
    "UnsupportedArchitectureError",
    "UnsupportedConfigError",
    "WeightLoadError",
    "load_hf_folder",
    "load_hf_model",
    "read_hf_config",
]
