"""Offline throughput, like vLLM's ``benchmark_throughput``: every request is submitted at
once and produces exactly ``output_len`` tokens (``ignore_eos``)."""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class ThroughputResult:
    """What one throughput run measured."""

    num_requests: int
    prompt_tokens: int
    output_tokens: int
    elapsed_s: float
    warmup_s: float
    requests_per_s: float
    output_tokens_per_s: float
    total_tokens_per_s: float
    peak_rss_mib: float
    compilations: int
    steps: int

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def table(self) -> str:
        """A short human summary."""
        return (
            f"requests: {self.num_requests}  prompt tokens: {self.prompt_tokens}  "
            f"output tokens: {self.output_tokens}\n"
            f"elapsed: {self.elapsed_s:.2f} s (warm-up {self.warmup_s:.2f} s)\n"
            f"throughput: {self.requests_per_s:.2f} req/s, {self.output_tokens_per_s:.1f} output "
            f"tok/s, {self.total_tokens_per_s:.1f} total tok/s\n"
            f"peak RSS: {self.peak_rss_mib:.0f} MiB  compilations: {self.compilations}  "
            f"steps: {self.steps}"
        )


def run_throughput(
    engine: Any, prompts: list, output_len: int, warmup: bool = True
) -> ThroughputResult:
    """Generate ``output_len`` tokens for every prompt at once and time it.

    With ``warmup`` the same workload runs once first so compilation is not timed (the
    compilations of both runs are reported).
    """
    from esurge_core.sampling.params import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    inputs = [p if isinstance(p, str) else {"prompt_token_ids": p} for p in prompts]
    warmup_s = 0.0
    if warmup:
        start = time.perf_counter()
        engine.generate(inputs, params)
        warmup_s = time.perf_counter() - start
    steps_before = engine.num_steps
    start = time.perf_counter()
    outputs = engine.generate(inputs, params)
    elapsed = time.perf_counter() - start
    prompt_tokens = sum(len(o.prompt_token_ids) for o in outputs)
    output_tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return ThroughputResult(
        num_requests=len(outputs),
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        elapsed_s=elapsed,
        warmup_s=warmup_s,
        requests_per_s=len(outputs) / elapsed,
        output_tokens_per_s=output_tokens / elapsed,
        total_tokens_per_s=(prompt_tokens + output_tokens) / elapsed,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        compilations=engine.runner.num_compilations,
        steps=engine.num_steps - steps_before,
    )
