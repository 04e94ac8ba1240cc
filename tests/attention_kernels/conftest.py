"""Make the attention plugins importable from a source checkout, and seed every test freshly."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

_PLUGINS = Path(__file__).resolve().parents[2] / "plugins"

for _package, _folder in (
    ("esurge_attention_xla", "attention_xla"),
    ("esurge_attention_pallas", "attention_pallas"),
    ("esurge_attention_triton", "attention_triton"),
):
    if importlib.util.find_spec(_package) is None and (_PLUGINS / _folder).is_dir():
        sys.path.insert(0, str(_PLUGINS / _folder))


@pytest.fixture
def rng() -> np.random.Generator:
    """A freshly seeded generator per test: every run sees new batches (seed is printed)."""
    seed = np.random.SeedSequence().entropy
    print(f"random seed: {seed}")
    return np.random.default_rng(seed)
