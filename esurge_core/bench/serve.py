"""Online serving benchmark for any OpenAI-compatible endpoint (vLLM's definitions).

Requests stream from ``/v1/completions``. Arrivals are open-loop Poisson at
``request_rate`` (``inf``: all at once) and/or capped at ``max_concurrency`` in flight.

* TTFT: from sending the request to the first streamed token (queueing included);
* ITL: the gaps between successive streamed chunks;
* TPOT: ``(e2e - ttft) / (output_tokens - 1)``, the first token excluded;
* goodput: completed requests per second that meet every stated SLO.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class RequestRecord:
    """Timings of one request."""

    ok: bool
    ttft: float = 0.0
    e2e: float = 0.0
    itl: list[float] = field(default_factory=list)
    output_tokens: int = 0
    usage_reported: bool = False  # output_tokens came from the server's usage, not counted
    error: str = ""

    @property
    def tpot(self) -> float:
        """Time per output token after the first."""
        return (self.e2e - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else 0.0


@dataclass(slots=True)
class ServeResult:
    """Aggregates over all requests (times in milliseconds)."""

    completed: int
    failed: int
    duration_s: float
    output_tokens: int
    output_tokens_per_s: float
    request_throughput: float
    goodput: float | None
    ttft_ms: dict[str, float]
    tpot_ms: dict[str, float]
    itl_ms: dict[str, float]
    e2e_ms: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def table(self) -> str:
        """A human summary, one metric per line."""
        lines = [
            f"completed {self.completed}, failed {self.failed}, in {self.duration_s:.2f} s",
            f"output tokens/s: {self.output_tokens_per_s:.1f}  requests/s: "
            f"{self.request_throughput:.2f}"
            + (f"  goodput: {self.goodput:.2f} req/s" if self.goodput is not None else ""),
        ]
        for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
            stats = getattr(self, name)
            lines.append(
                f"{name[:-3].upper():5s} mean {stats['mean']:.1f}  p50 {stats['p50']:.1f}  "
                f"p99 {stats['p99']:.1f} ms"
            )
        return "\n".join(lines)


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "p50": 0.0, "p99": 0.0}
    array = np.asarray(values) * 1000.0
    return {
        "mean": float(array.mean()),
        "p50": float(np.percentile(array, 50)),
        "p99": float(np.percentile(array, 99)),
    }


async def _one_request(client: Any, url: str, payload: dict, headers: dict) -> RequestRecord:
    start = time.perf_counter()
    record = RequestRecord(ok=False)
    last = start
    try:
        async with client.stream("POST", url, json=payload, headers=headers) as response:
            if response.status_code != 200:
                record.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return record
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                # OpenAI sends usage in a last chunk with no choices; llama.cpp's server puts
                # it beside the final choice. Either way it is the authoritative count.
                usage = chunk.get("usage")
                if usage:
                    record.output_tokens = usage["completion_tokens"]
                    record.usage_reported = True
                text = "".join(c.get("text") or "" for c in chunk.get("choices", []))
                if not text:
                    continue
                now = time.perf_counter()
                if record.ttft == 0.0:
                    record.ttft = now - start
                else:
                    record.itl.append(now - last)
                last = now
                if not record.usage_reported:
                    record.output_tokens = max(record.output_tokens, len(record.itl) + 1)
        record.e2e = time.perf_counter() - start
        record.ok = True
    except Exception as exc:  # a benchmark reports failures, it does not stop on them
        record.error = repr(exc)
    return record


async def run_serve_benchmark(
    base_url: str,
    model: str,
    prompts: list,
    output_len: int,
    *,
    request_rate: float = float("inf"),
    max_concurrency: int | None = None,
    api_key: str | None = None,
    seed: int = 0,
    slo_ttft_ms: float | None = None,
    slo_tpot_ms: float | None = None,
) -> ServeResult:
    """Send every prompt (text or token ids) and aggregate the timings."""
    import httpx

    url = base_url.rstrip("/") + "/v1/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    rng = np.random.default_rng(seed)
    limit = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    timeout = httpx.Timeout(None, connect=30.0)
    async with httpx.AsyncClient(
        timeout=timeout, limits=httpx.Limits(max_connections=None)
    ) as client:

        async def send(prompt: Any) -> RequestRecord:
            payload = {
                "model": model,
                "prompt": prompt,
                "max_tokens": output_len,
                "temperature": 0.0,
                "ignore_eos": True,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            if limit is None:
                return await _one_request(client, url, payload, headers)
            async with limit:
                return await _one_request(client, url, payload, headers)

        start = time.perf_counter()
        tasks = []
        for prompt in prompts:
            tasks.append(asyncio.create_task(send(prompt)))
            if request_rate != float("inf"):
                await asyncio.sleep(rng.exponential(1.0 / request_rate))
        records = await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
    done = [r for r in records if r.ok]
    output_tokens = sum(r.output_tokens for r in done)
    goodput = None
    if slo_ttft_ms is not None or slo_tpot_ms is not None:
        good = [
            r
            for r in done
            if (slo_ttft_ms is None or r.ttft * 1000 <= slo_ttft_ms)
            and (slo_tpot_ms is None or r.tpot * 1000 <= slo_tpot_ms)
        ]
        goodput = len(good) / duration
    return ServeResult(
        completed=len(done),
        failed=len(records) - len(done),
        duration_s=duration,
        output_tokens=output_tokens,
        output_tokens_per_s=output_tokens / duration,
        request_throughput=len(done) / duration,
        goodput=goodput,
        ttft_ms=_summary([r.ttft for r in done]),
        tpot_ms=_summary([r.tpot for r in done if r.output_tokens > 1]),
        itl_ms=_summary([gap for r in done for gap in r.itl]),
        e2e_ms=_summary([r.e2e for r in done]),
    )
