"""Turn ``model=`` (a packaged short name, a Hugging Face folder or a GGUF file) into a model,
its parameters and its tokenizer. Nothing is ever downloaded from a model hub.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esurge_core.components import ComponentKind
from esurge_core.models.causal_lm import CausalLM
from esurge_core.models.fused_projections import fuse_projections
from esurge_core.packaged_models import resolve_model
from esurge_core.plugin_manager import get_plugin_manager
from esurge_core.weights.errors import UnsupportedArchitectureError
from esurge_core.weights.gguf_loader import load_gguf
from esurge_core.weights.hf_folder import load_hf_folder
from esurge_core.weights.tokenizer_loader import load_tokenizer

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class LoadedModel:
    """A model ready to run; its params with q/k/v and gate/up fused (``fuse_projections``)."""

    path: Path
    model: CausalLM
    params: dict
    tokenizer: Any
    hf_config: dict


def build_model_from_plugins(config: dict, dtype: str) -> CausalLM:
    """Build the architecture named by ``config["architectures"][0]`` via the models hook."""
    architectures = config.get("architectures") or []
    architecture = architectures[0] if architectures else None
    registry = get_plugin_manager().registry
    supported = registry.names(ComponentKind.MODEL)
    if architecture not in supported:
        raise UnsupportedArchitectureError(
            str(architecture),
            supported,
            f"architecture {architecture!r} is not supported; supported: {', '.join(supported)}",
        )
    builder = registry.get(ComponentKind.MODEL, architecture).load()
    return builder(config, dtype)


_cache: dict[tuple[str, str | None, str, str | None], LoadedModel] = {}
_cache_lock = threading.Lock()


def load_model(
    model: str,
    tokenizer: str | None,
    dtype: str,
    progress: bool = True,
    param_dtype: str | None = None,
) -> LoadedModel:
    """Resolve, build and load ``model``; the tokenizer comes with it unless given.

    The result is kept for the process, so a second engine over the same model (tests,
    several engines with different cache settings) shares the immutable parameters instead
    of loading them again. ``param_dtype`` stores the weights in another dtype than the
    activations (see `CausalLM.set_param_dtype`).
    """
    key = (model, tokenizer, dtype, param_dtype)
    with _cache_lock:
        if key not in _cache:
            _cache.clear()  # keep at most one model's weights alive
            _cache[key] = _load_model(model, tokenizer, dtype, progress, param_dtype)
        return _cache[key]


def _load_model(
    model: str, tokenizer: str | None, dtype: str, progress: bool, param_dtype: str | None
) -> LoadedModel:
    path = resolve_model(model)
    if path.is_dir():
        hf_config, tensors = load_hf_folder(path)
    else:
        gguf = load_gguf(path, progress=progress)
        hf_config, tensors = gguf.config, gguf.tensors
    causal_lm = build_model_from_plugins(hf_config, dtype)
    if param_dtype is not None:
        causal_lm.set_param_dtype(param_dtype)
    params = causal_lm.load_params(tensors, progress=progress)
    fuse_projections(params, causal_lm.matmul_weight_paths())  # in place: no second copy
    tok = load_tokenizer(resolve_model(tokenizer) if tokenizer else path)
    logger.info("loaded %s (%s, %s) from %s", causal_lm.architecture, dtype, path.name, path)
    return LoadedModel(path, causal_lm, params, tok, hf_config)
