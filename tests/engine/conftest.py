"""Engines over the packaged real models, and the HF oracle, shared across engine tests."""

from __future__ import annotations

import pytest

from esurge_core.packaged_models import resolve_model

from .hf_oracle import HFOracle


@pytest.fixture(scope="session")
def smollm2_path():
    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma3_path():
    return resolve_model("gemma3-270m")


@pytest.fixture(scope="session")
def smollm2_oracle(smollm2_path):
    return HFOracle(smollm2_path)


@pytest.fixture(scope="session")
def gemma3_oracle(gemma3_path):
    return HFOracle(gemma3_path)


@pytest.fixture(scope="session")
def make_engine():
    """``make_engine(model, **config)`` -> an eSurge, closed at the end of the session."""
    from esurge_core.engine.esurge import eSurge

    engines = []

    def make(model: str = "smollm2-135m-instruct", **config):
        config.setdefault("kv_cache_memory", 256 << 20)
        engine = eSurge(model, **config)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()
