"""Load a Hugging Face model folder: config.json plus safetensors weights (sharded or not).

Nothing is downloaded: the folder must already hold `config.json` and either
`model.safetensors.index.json` with the shards it names, or one or more `*.safetensors`
files. Tensors are memory-mapped and read lazily, so a model is copied once, tensor by
tensor, straight into its parameter dtype (`CausalLM.load_params` shows the progress bar
and checks every shape against the config).

The (config dict, tensors mapping) pair is the same shape the GGUF loader produces, so
`model.load_params` accepts either.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np

from esurge_core.weights.errors import CheckpointNotFoundError, WeightLoadError

if TYPE_CHECKING:
    from esurge_core.models.causal_lm import CausalLM

INDEX_FILE = "model.safetensors.index.json"

_SAFETENSORS_DTYPES: dict[str, Any] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


class _SafetensorsFile:
    """One memory-mapped .safetensors file: its header and zero-copy tensor views."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with path.open("rb") as handle:
                (header_len,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(header_len))
        except (OSError, struct.error, ValueError) as error:
            raise WeightLoadError(f"cannot read safetensors header of {path}: {error}") from error
        header.pop("__metadata__", None)
        self.entries: dict[str, dict[str, Any]] = header
        self._data_start = 8 + header_len
        self._mmap: np.memmap | None = None

    def tensor(self, name: str) -> np.ndarray:
        entry = self.entries[name]
        dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise WeightLoadError(
                f"tensor {name!r} in {self.path} has safetensors dtype {entry['dtype']!r}, "
                f"which is not supported; supported: {sorted(_SAFETENSORS_DTYPES)}"
            )
        if self._mmap is None:
            self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
        begin, end = entry["data_offsets"]
        raw = self._mmap[self._data_start + begin : self._data_start + end]
        return raw.view(dtype).reshape(entry["shape"])


class SafetensorsCheckpoint(Mapping[str, np.ndarray]):
    """Read-only mapping of tensor name -> numpy array over a folder's safetensors files.

    Arrays are memory-mapped views, read from disk when used. Shapes are known from the
    headers without reading any data (`shape_of`).
    """

    def __init__(self, files: list[Path]) -> None:
        self._where: dict[str, _SafetensorsFile] = {}
        for path in files:
            opened = _SafetensorsFile(path)
            for name in opened.entries:
                self._where[name] = opened

    @classmethod
    def from_folder(cls, folder: str | Path) -> SafetensorsCheckpoint:
        """Open the weights of a Hugging Face folder (sharded through the index, or not).

        Raises:
            CheckpointNotFoundError: the folder has no safetensors weights, or the index
                names a shard that is missing.
        """
        folder = Path(folder)
        index = folder / INDEX_FILE
        if index.is_file():
            try:
                weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError) as error:
                raise WeightLoadError(f"cannot read the shard index {index}: {error}") from error
            shards = sorted(set(weight_map.values()))
            missing = [shard for shard in shards if not (folder / shard).is_file()]
            if missing:
                raise CheckpointNotFoundError(
                    f"{index} names shard(s) missing from the folder: {missing}"
                )
            return cls([folder / shard for shard in shards])
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise CheckpointNotFoundError(
                f"no safetensors weights in {folder} (looked for {INDEX_FILE} and "
                "*.safetensors); PyTorch .bin checkpoints are not supported: convert them "
                "with transformers' save_pretrained(..., safe_serialization=True)"
            )
        return cls(files)

    def shape_of(self, name: str) -> tuple[int, ...]:
        """Return the shape of tensor `name` from its header, reading no data."""
        return tuple(self._where[name].entries[name]["shape"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self._where[name].tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where


def read_hf_config(folder: str | Path) -> dict[str, Any]:
    """Return the parsed `config.json` of a Hugging Face folder.

    Raises:
        CheckpointNotFoundError: the folder or its config.json does not exist.
        WeightLoadError: config.json is not valid JSON.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointNotFoundError(f"model folder {folder} does not exist or is not a folder")
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"{folder} has no config.json; a Hugging Face model folder needs one"
        )
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise WeightLoadError(f"{path} is not valid JSON: {error}") from error


def load_hf_folder(folder: str | Path) -> tuple[dict[str, Any], SafetensorsCheckpoint]:
    """Return (config dict, lazy tensors mapping) of a Hugging Face folder; reads no weights."""
    return read_hf_config(folder), SafetensorsCheckpoint.from_folder(folder)


def load_hf_model(
    folder: str | Path,
    dtype: Any = "float32",
    *,
    progress: bool = True,
    param_dtype: Any = None,
) -> tuple[CausalLM, dict]:
    """Build the model of a Hugging Face folder and load its weights.

    Args:
        folder: Local folder with config.json and safetensors weights (never downloaded).
        dtype: Activation (and, by default, parameter) dtype, "float32" or "bfloat16".
        progress: Show a tqdm progress bar while loading.
        param_dtype: Store the weights in this dtype instead (see `CausalLM.set_param_dtype`).

    Returns:
        The model and its params pytree.

    Raises:
        CheckpointNotFoundError, UnsupportedArchitectureError, UnsupportedConfigError,
        MissingTensorError, TensorShapeError: each naming the file, architecture or tensor.
    """
    from esurge_core.models.registry import build_model

    config, tensors = load_hf_folder(folder)
    model = build_model(config, dtype)
    if param_dtype is not None:
        model.set_param_dtype(param_dtype)
    return model, model.load_params(tensors, progress=progress)
