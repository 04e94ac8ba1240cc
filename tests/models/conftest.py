"""Fixtures of the model tests: each HF case built, saved and loaded through our loader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import transformers

from esurge_core.models.causal_lm import CausalLM
from esurge_core.weights.hf_folder import load_hf_model
from tests.models.hf_reference import CASES, build_hf_model, save_hf_model


@dataclass
class LoadedCase:
    """An HF reference model and the folder it was saved to."""

    name: str
    hf_model: transformers.PreTrainedModel
    folder: Path

    def load(self, dtype: str, param_dtype: str | None = None) -> tuple[CausalLM, dict]:
        """Load the saved folder into an eSurge model of `dtype` (weights in `param_dtype`)."""
        return load_hf_model(self.folder, dtype, progress=False, param_dtype=param_dtype)


@pytest.fixture(scope="session", params=CASES, ids=[case.name for case in CASES])
def hf_case(request, tmp_path_factory) -> LoadedCase:
    """Every architecture variant, saved as a Hugging Face folder."""
    case = request.param
    model = build_hf_model(case)
    folder = save_hf_model(model, tmp_path_factory.mktemp(case.name))
    return LoadedCase(case.name, model, folder)
