"""``ServerOptions``: the operator's limits for one server (sizes, rates, queue, timeouts).

Every limit has a safe default; docs/operations.md lists them with advice on tuning. A value
of ``None`` switches a limit off where that is allowed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServerOptions(BaseModel):
    """Limits and switches of an ``eSurgeApiServer`` (all checked per request)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # ------------------------------------------------------------------ request size
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body (413).")
    max_header_bytes: int = Field(
        16 << 10, ge=1024, description="Largest request line plus headers (uvicorn/h11)."
    )
    max_json_depth: int = Field(32, ge=4, description="Deepest nesting of the JSON body.")
    # ------------------------------------------------------------------ request fields
    max_n: int = Field(16, ge=1, le=128, description="Most choices per prompt (n).")
    max_prompts: int = Field(32, ge=1, description="Most prompts of one completion request.")
    max_logprobs: int = Field(20, ge=0, le=20, description="Most top log-probs per token.")
    max_stop_strings: int = Field(8, ge=0, description="Most stop strings.")
    max_stop_length: int = Field(256, ge=1, description="Longest stop string (characters).")
    max_stop_token_ids: int = Field(64, ge=0, description="Most stop token ids.")
    max_logit_bias: int = Field(1024, ge=0, description="Most logit_bias entries.")
    max_tokens_cap: int | None = Field(
        None, ge=1, description="Largest max_tokens a client may ask for; None = the context."
    )
    tool_call_parser: str = Field(
        "hermes", min_length=1, description="Tool-call parser plugin (hermes, json, ...)."
    )
    allow_client_chat_template: bool = Field(
        False, description="Accept chat_template / chat_template_kwargs from clients."
    )
    # ------------------------------------------------------------------ load
    max_queued_requests: int | None = Field(
        256, ge=0, description="Most engine sequences waiting for a slot (429 beyond)."
    )
    request_timeout_s: float | None = Field(
        None, gt=0, description="Longest a request may take end to end (then aborted, 504)."
    )
    requests_per_minute: int | None = Field(
        None, ge=1, description="Default per-key request rate (429 beyond)."
    )
    tokens_per_minute: int | None = Field(
        None, ge=1, description="Default per-key token quota per minute (429 beyond)."
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After of queue-full and draining.")
    # ------------------------------------------------------------------ lifecycle
    drain_timeout_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests may finish."
    )
    wedge_threshold_s: float = Field(
        120.0, gt=0, description="/health is 503 when busy with no step for this long."
    )
    watchdog_interval_s: float = Field(
        0.25, gt=0, description="How often the server samples engine liveness."
    )
    # ------------------------------------------------------------------ browsers
    cors_allow_origins: tuple[str, ...] = Field(
        (), description="Origins allowed by CORS; empty = no CORS headers at all."
    )
