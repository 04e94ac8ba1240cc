"""Loading the tokenizer (and chat template) of a model from a GGUF file or a Hugging Face folder.

Both go through transformers, offline (`local_files_only=True`, never the hub):

- A folder with `tokenizer.json` (and usually `tokenizer_config.json`, `chat_template.jinja`)
  is loaded with `AutoTokenizer.from_pretrained(folder)`.
- A GGUF file carries its vocabulary, merges/scores and `tokenizer.chat_template` as metadata;
  transformers rebuilds a fast tokenizer from them (`gguf_file=`). That conversion is slow for
  large vocabularies (about 15 s for Gemma's 262k tokens), so the result is saved once as a
  plain tokenizer folder under the eSurge cache and reloaded from there afterwards. The cache
  key covers the file's path, size and modification time and the transformers version.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import transformers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from esurge_core.packaged_models import cache_root
from esurge_core.weights.errors import CheckpointNotFoundError, WeightLoadError

_GGUF_MAGIC = b"GGUF"


def load_tokenizer(
    source: str | os.PathLike[str], *, use_cache: bool = True
) -> PreTrainedTokenizerFast:
    """Return the fast tokenizer of a GGUF file or a Hugging Face folder, with its chat template.

    Args:
        source: A `.gguf` file or a folder holding `tokenizer.json`.
        use_cache: For GGUF files, reuse (or create) the converted tokenizer saved under
            `cache_root() / "tokenizers"`. Cache write failures are ignored.

    Returns:
        The tokenizer; `tokenizer.chat_template` is None when the model has no template
        (a base model such as Gemma 3 270M).

    Raises:
        CheckpointNotFoundError: `source` does not exist, or a folder has no tokenizer files.
        WeightLoadError: transformers could not build a tokenizer from the source.
    """
    path = Path(source)
    if path.is_dir():
        return _load_from_folder(path)
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"tokenizer source {str(path)!r} does not exist; pass a .gguf file or a Hugging Face "
            "model folder holding tokenizer.json."
        )
    if not _is_gguf(path):
        raise WeightLoadError(
            f"tokenizer source {path} is neither a folder nor a GGUF file (no GGUF magic); "
            "pass a .gguf file or a Hugging Face model folder."
        )
    if not use_cache:
        return _convert_gguf(path)
    cached = _cache_dir_for(path)
    if (cached / "tokenizer.json").is_file():
        return _load_from_folder(cached)
    tokenizer = _convert_gguf(path)
    _save_to_cache(tokenizer, cached)
    return tokenizer


def _is_gguf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == _GGUF_MAGIC


def _load_from_folder(folder: Path) -> PreTrainedTokenizerFast:
    if not (folder / "tokenizer.json").is_file():
        raise CheckpointNotFoundError(
            f"{folder} has no tokenizer.json; eSurge loads fast (Rust) tokenizers only. "
            "Add the model's tokenizer.json to the folder."
        )
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise WeightLoadError(f"cannot load the tokenizer of {folder}: {exc}") from exc


def _convert_gguf(path: Path) -> PreTrainedTokenizerFast:
    try:
        return AutoTokenizer.from_pretrained(
            str(path.parent), gguf_file=path.name, local_files_only=True
        )
    except (OSError, ValueError, KeyError) as exc:
        raise WeightLoadError(
            f"cannot build a tokenizer from the GGUF metadata of {path}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _cache_dir_for(path: Path) -> Path:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return cache_root() / "tokenizers" / f"{path.stem}-{digest}"


def _save_to_cache(tokenizer: PreTrainedTokenizerFast, target: Path) -> None:
    # Write into a temporary sibling, then rename, so a reader never sees half a folder.
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
        tokenizer.save_pretrained(str(staging))
        try:
            staging.rename(target)
        except OSError:  # another process won the race; its copy is as good as ours
            shutil.rmtree(staging, ignore_errors=True)
    except OSError:
        return
