"""Seeded random-token prompts (vLLM's random dataset) or prompts read from a file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def random_token_prompts(
    num_prompts: int,
    input_len: int,
    vocab_size: int,
    seed: int = 0,
    special_ids: frozenset[int] = frozenset(),
) -> list[list[int]]:
    """``num_prompts`` lists of ``input_len`` token ids drawn uniformly, avoiding special ids."""
    rng = np.random.default_rng(seed)
    allowed = np.setdiff1d(np.arange(vocab_size), np.fromiter(special_ids, int, len(special_ids)))
    prompts = allowed[rng.integers(0, len(allowed), size=(num_prompts, input_len))]
    return prompts.tolist()


def file_prompts(path: str | Path) -> list[str]:
    """Prompts from a text file (one per line) or a JSON list of strings / {"prompt": ...}."""
    text = Path(path).read_text()
    if path.__str__().endswith(".json"):
        items = json.loads(text)
        return [item if isinstance(item, str) else item["prompt"] for item in items]
    return [line for line in text.splitlines() if line.strip()]
