"""Hugging Face transformers as the oracle for greedy generation (PyTorch CPU, fp32).

``compare_greedy`` applies the project's rule: outputs must be equal token for token; where a
token differs, the reference step must be a near tie (the two candidates' HF log-probs within
1e-3), and the comparison stops there. Any other difference is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

NEAR_TIE = 1e-3


@dataclass
class Reference:
    """HF's greedy continuation and, per step, the log-probs of every vocabulary entry."""

    tokens: list[int]
    step_logprobs: list[torch.Tensor]


class HFOracle:
    """Loads a GGUF with transformers once and answers greedy continuations (cached)."""

    def __init__(self, gguf_path: Path) -> None:
        import transformers

        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent),
            gguf_file=gguf_path.name,
            dtype=torch.float32,
            local_files_only=True,
        ).eval()
        self._cache: dict[tuple[tuple[int, ...], int], Reference] = {}

    @torch.no_grad()
    def greedy(self, prompt_ids: list[int], max_new_tokens: int) -> Reference:
        key = (tuple(prompt_ids), max_new_tokens)
        if key not in self._cache:
            ids = torch.tensor([prompt_ids])
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                output_scores=True,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=self.model.config.eos_token_id,
            )
            tokens = out.sequences[0, len(prompt_ids) :].tolist()
            logprobs = [torch.log_softmax(step[0].float(), -1) for step in out.logits]
            self._cache[key] = Reference(tokens, logprobs)
        return self._cache[key]


def compare_greedy(ours: list[int], reference: Reference) -> int:
    """Number of tokens compared equal; raise AssertionError on a real divergence."""
    for step, (mine, theirs) in enumerate(zip(ours, reference.tokens)):
        if mine == theirs:
            continue
        logprobs = reference.step_logprobs[step]
        gap = abs(float(logprobs[mine]) - float(logprobs[theirs]))
        assert gap <= NEAR_TIE, (
            f"step {step}: eSurge chose {mine}, HF chose {theirs}; HF log-prob gap {gap:.2e} "
            f"is not a near tie (<= {NEAR_TIE}). ours={ours} reference={reference.tokens}"
        )
        return step
    # Equal over the common length: the shorter one must have stopped on EOS or a limit.
    return min(len(ours), len(reference.tokens))
