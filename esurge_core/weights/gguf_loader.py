"""Loading a GGUF file as a Hugging Face config plus float32 tensors in Hugging Face names.

`load_gguf` reads the file with the `gguf` package (memory-mapped), checks it, translates the
metadata into a `config.json`-style dict (`gguf_config`), dequantises every tensor to float32
with `gguf.quants.dequantize` and renames/re-lays it out to what a Hugging Face checkpoint of
the same model holds (`gguf_tensors`). The result feeds `model.load_params` like a safetensors
folder would. Tied embeddings stay tied: a GGUF without `output.weight` yields no
`lm_head.weight` and `config["tie_word_embeddings"] = True`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from tqdm.auto import tqdm

from esurge_core.weights.errors import (
    CheckpointNotFoundError,
    UnsupportedArchitectureError,
    UnsupportedConfigError,
    WeightLoadError,
)
from esurge_core.weights.gguf_config import (
    SUPPORTED_GGUF_ARCHITECTURES,
    GGUFArchitecture,
    hf_config_from_gguf,
)
from esurge_core.weights.gguf_tensors import hf_tensor_name, to_hf_layout

# Tokenizer arrays are large (262k entries for Gemma) and only the tokenizer loader needs
# them; the metadata dict keeps their lengths out of them and nothing else.
_BULKY_KEYS = frozenset(
    {
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.scores",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
    }
)
_GGUF_MAGIC = b"GGUF"
_SUPPORTED_VERSIONS = (2, 3)
_HEADER_BYTES = 24  # magic, version (u32), tensor count (u64), metadata count (u64)


@dataclass(slots=True)
class GGUFModel:
    """A GGUF checkpoint translated to Hugging Face conventions.

    Attributes:
        path: The GGUF file (also the tokenizer source: pass it to `load_tokenizer`).
        architecture: The GGUF `general.architecture` (e.g. "llama", "gemma3").
        config: A Hugging Face `config.json` dict (architectures, sizes, RoPE, ids, ...).
        tensors: Float32 arrays keyed by Hugging Face name, in Hugging Face layout.
        chat_template: The Jinja chat template of `tokenizer.chat_template`, or None (base
            models such as Gemma 3 270M carry none).
        metadata: The remaining GGUF key-values (without the bulky tokenizer arrays).
    """

    path: Path
    architecture: str
    config: dict[str, Any]
    tensors: dict[str, np.ndarray]
    chat_template: str | None
    metadata: dict[str, Any]


def load_gguf(path: str | os.PathLike[str], *, progress: bool = True) -> GGUFModel:
    """Read, check, dequantise and translate the GGUF file at `path`.

    Args:
        path: A `.gguf` file.
        progress: Show a tqdm progress bar while dequantising.

    Raises:
        CheckpointNotFoundError: `path` is not an existing file.
        WeightLoadError: The file is not GGUF, is truncated or corrupt, or holds a tensor type
            the `gguf` package cannot dequantise.
        UnsupportedArchitectureError: `general.architecture` is not one eSurge loads.
        UnsupportedConfigError: Metadata needed for the config is missing, or a tensor has
            no Hugging Face counterpart.
    """
    path = Path(path)
    reader = _open_reader(path)
    arch, metadata, config = _translate_metadata(reader, path)
    _check_tensor_types(reader, path)
    tensors: dict[str, np.ndarray] = {}
    bar = tqdm(
        reader.tensors, desc=f"Dequantising {path.name}", unit="tensor", disable=not progress
    )
    for tensor in bar:
        name = hf_tensor_name(tensor.name, arch)
        weight = _dequantise(tensor, path)
        tensors[name] = to_hf_layout(name, weight, arch, config)
    return GGUFModel(
        path=path,
        architecture=arch.gguf_name,
        config=config,
        tensors=tensors,
        chat_template=metadata.get("tokenizer.chat_template"),
        metadata=metadata,
    )


def read_gguf_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the Hugging Face config dict of a GGUF file without dequantising any tensor.

    Raises:
        The same errors as `load_gguf`, except those about tensor types.
    """
    path = Path(path)
    reader = _open_reader(path)
    return _translate_metadata(reader, path)[2]


def _open_reader(path: Path) -> gguf.GGUFReader:
    if not path.is_file():
        raise CheckpointNotFoundError(f"GGUF file {str(path)!r} does not exist or is not a file.")
    size = path.stat().st_size
    with path.open("rb") as handle:
        header = handle.read(_HEADER_BYTES)
    if header[:4] != _GGUF_MAGIC:
        raise WeightLoadError(
            f"{path} is not a GGUF file: it starts with {header[:4]!r}, a GGUF file with "
            f"{_GGUF_MAGIC!r}."
        )
    if len(header) < _HEADER_BYTES:
        raise WeightLoadError(
            f"{path} is truncated: {size} bytes, shorter than the {_HEADER_BYTES}-byte GGUF "
            "header. Download or assemble the file again."
        )
    version = int.from_bytes(header[4:8], "little")
    if version not in _SUPPORTED_VERSIONS:
        raise WeightLoadError(
            f"{path} has GGUF version {version}; supported versions: {list(_SUPPORTED_VERSIONS)}. "
            "The file is corrupt or was written by a newer llama.cpp."
        )
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, OverflowError, MemoryError, UnicodeDecodeError) as exc:
        raise WeightLoadError(
            f"{path} ({size} bytes) is truncated or corrupt: the gguf reader failed with "
            f"{type(exc).__name__}: {exc}. Download or assemble the file again."
        ) from exc
    for tensor in reader.tensors:
        end = tensor.data_offset + tensor.n_bytes
        if end > size:
            raise WeightLoadError(
                f"{path} is truncated: tensor {tensor.name!r} ends at byte {end} but the file "
                f"has {size} bytes. Download or assemble the file again."
            )
    return reader


def _translate_metadata(
    reader: gguf.GGUFReader, path: Path
) -> tuple[GGUFArchitecture, dict[str, Any], dict[str, Any]]:
    metadata: dict[str, Any] = {}
    token_count: int | None = None
    for key, field in reader.fields.items():
        if key in _BULKY_KEYS:
            if key == "tokenizer.ggml.tokens":
                token_count = len(field.data)
            continue
        try:
            metadata[key] = field.contents()
        except (ValueError, IndexError, UnicodeDecodeError) as exc:
            raise WeightLoadError(
                f"{path} is corrupt: metadata key {key!r} cannot be decoded ({exc})."
            ) from exc
    name = metadata.get("general.architecture")
    arch = SUPPORTED_GGUF_ARCHITECTURES.get(str(name))
    if arch is None:
        supported = sorted(SUPPORTED_GGUF_ARCHITECTURES)
        raise UnsupportedArchitectureError(
            str(name),
            supported,
            f"{path}: GGUF architecture {name!r} (general.architecture) is not supported; "
            f"supported GGUF architectures: {supported}.",
        )
    tensor_names = {tensor.name for tensor in reader.tensors}
    try:
        config = hf_config_from_gguf(metadata, arch, tensor_names, token_count)
    except UnsupportedConfigError as exc:
        raise UnsupportedConfigError(f"{path}: {exc}") from exc
    return arch, metadata, config


def _dequantisable(qtype: gguf.GGMLQuantizationType) -> bool:
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    try:
        gguf.quants.dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def _check_tensor_types(reader: gguf.GGUFReader, path: Path) -> None:
    # Check every type before dequantising anything, so an unsupported file fails at once.
    types = {tensor.tensor_type for tensor in reader.tensors}
    unsupported = sorted(qtype.name for qtype in types if not _dequantisable(qtype))
    if unsupported:
        names = [t.name for t in reader.tensors if t.tensor_type.name in unsupported][:5]
        raise WeightLoadError(
            f"{path}: tensor type(s) {unsupported} cannot be dequantised by the installed gguf "
            f"package (gguf {_gguf_version()}); first affected tensors: {names}. Re-quantise "
            "the model to a supported type (F32, F16, BF16, Q4_0..Q8_0, Q2_K..Q6_K, ...)."
        )


def _dequantise(tensor: Any, path: Path) -> np.ndarray:
    shape = tuple(int(d) for d in reversed(tensor.shape))  # GGUF lists dimensions fastest-first
    try:
        weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape)
    except ValueError as exc:
        raise WeightLoadError(
            f"{path} is corrupt: tensor {tensor.name!r} ({tensor.tensor_type.name}, shape "
            f"{shape}) cannot be dequantised: {exc}"
        ) from exc
    if weight.dtype != np.float32 or np.may_share_memory(weight, tensor.data):
        # F32 tensors come back as views of the memory-mapped file; own the data.
        weight = np.array(weight, dtype=np.float32)
    return weight


def _gguf_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gguf")
    except PackageNotFoundError:
        return "unknown"
