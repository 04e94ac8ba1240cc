"""Engine configuration: pydantic models with ranges, and flat EasyDeL-style keyword names.

Users mostly write ``eSurge(model=..., max_model_len=..., page_size=...)``; those flat names
(the user-facing names of EasyDeL's eSurge) are routed into four sections by
``EngineConfig.from_kwargs``. Every invalid value raises ``ConfigError`` naming the field, the
value and the allowed range.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from esurge_core.errors import ConfigError

DType = Literal["float32", "bfloat16"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelConfig(_Section):
    """Which model to run and in which precision."""

    model: str = Field(
        "smollm2-135m-instruct",
        min_length=1,
        description="A packaged short name, a Hugging Face folder, or a GGUF file.",
    )
    tokenizer: str | None = Field(
        None, description="Tokenizer folder or GGUF file; default: the model's own."
    )
    dtype: DType = Field("float32", description="Activations and KV-cache dtype.")
    param_dtype: DType | None = Field(
        None,
        description=(
            "Weights dtype when it differs from `dtype`: bfloat16 weights with float32 "
            "activations halve weight memory and run the matrix products in bf16 with "
            "fp32 accumulation (fast on CPUs with AVX512-BF16). Default: `dtype`."
        ),
    )
    max_model_len: int | None = Field(
        None,
        ge=16,
        le=1_048_576,
        description="Longest prompt + output in tokens; default: the model's own limit.",
    )


class CacheConfig(_Section):
    """The paged KV cache."""

    page_size: int = Field(16, ge=1, le=1024, description="Tokens per KV-cache page.")
    hbm_utilization: float = Field(
        0.85,
        gt=0.0,
        le=0.98,
        description="Share of accelerator memory eSurge may use (weights + KV cache).",
    )
    kv_cache_memory: int | None = Field(
        None,
        ge=1 << 20,
        description="Byte budget for the KV cache on CPU (no HBM); default: from free RAM.",
    )
    kv_cache_dtype: DType | None = Field(
        None,
        description=(
            "KV-cache dtype when it differs from `dtype`: bfloat16 under float32 activations "
            "halves the cache's memory and the bytes attention reads. Default: `dtype`."
        ),
    )
    enable_prefix_caching: bool = Field(True, description="Reuse cached pages of shared prefixes.")
    prefix_cache_capacity: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Largest share of pages that may sit in the prefix cache unreferenced.",
    )
    kv_cache_allocator: str = Field("paged", min_length=1, description="Allocator plugin name.")


class SchedulerConfig(_Section):
    """How one engine step is planned."""

    scheduler: str = Field(
        "fcfs", min_length=1, description="Scheduling policy: 'fcfs', 'priority', or a plugin's."
    )
    max_num_seqs: int = Field(64, ge=1, le=4096, description="Most requests running in one step.")
    max_num_batched_tokens: int | None = Field(
        None,
        ge=1,
        le=1_048_576,
        description="Token budget of one step; default: 2048 (or max_model_len without chunking).",
    )
    enable_chunked_prefill: bool = Field(True, description="Split long prompts over steps.")
    enable_preemption: bool = Field(
        True, description="Preempt running requests when pages run out (else fail the newest)."
    )
    async_scheduling: bool | None = Field(
        None,
        description=(
            "Plan and queue the next step while the current one runs (one step ahead); "
            "default: on for accelerators; on CPU, where the host's work competes with the "
            "step for the same cores, only ahead of steps of at most 16 sequences."
        ),
    )
    num_speculative_tokens: int = Field(
        0,
        ge=0,
        le=15,
        description=(
            "Draft tokens a greedy request may verify per step, proposed by n-gram prompt "
            "lookup over its own prompt and output (the output stays greedy decoding's); "
            "0: off. Worth it where the model repeats what it has seen and the step is bound "
            "by reading the weights (small batches): see docs/speculative_decoding.md."
        ),
    )
    prompt_lookup_max: int = Field(
        4, ge=1, le=64, description="Longest n-gram the draft lookup matches (tried first)."
    )
    prompt_lookup_min: int = Field(
        1, ge=1, le=64, description="Shortest n-gram the draft lookup matches."
    )
    speculative_max_seqs: int = Field(
        4,
        ge=1,
        le=4096,
        description=(
            "Draft only while at most this many requests run and none waits (larger batches "
            "are bound by compute, where verifying drafts costs more than it saves)."
        ),
    )
    engine_thread_nice: int | None = Field(
        None,
        ge=-20,
        le=19,
        description=(
            "Nice value of the engine's step-loop thread (Linux; -20 to 19; lower runs "
            "first). Below the process's value it lets the loop preempt the kernels' threads "
            "on a CPU, and needs CAP_SYS_NICE (or RLIMIT_NICE); where it is not allowed, the "
            "loop keeps the process's value and a warning says so. Default: unchanged."
        ),
    )


class RuntimeConfig(_Section):
    """Backends and compilation."""

    attention: str = Field(
        "auto", min_length=1, description="'auto', 'xla', 'pallas', 'triton', or a plugin's."
    )
    matmul: str = Field(
        "auto",
        min_length=1,
        description="Backend of the weight products: 'auto', 'xla', 'cpu', or a plugin's.",
    )
    sampler: str = Field("default", min_length=1, description="Sampler plugin name.")
    min_input_pad: int = Field(
        8, ge=1, le=65_536, description="Smallest padded token/sequence bucket."
    )
    use_aot_forward: bool = Field(
        False, description="Compile every bucket at start-up (with a progress bar)."
    )
    compilation_cache: bool = Field(
        True,
        description="Keep compiled steps on disk ($ESURGE_CACHE/xla, JAX's persistent "
        "compilation cache) so a restart with the same settings compiles nothing.",
    )
    huge_page_weights: bool = Field(
        True,
        description="On CPU under Linux, move the loaded weights into transparent huge pages.",
    )
    runner_verbose: bool = Field(False, description="Log every compilation and step shape.")
    esurge_name: str | None = Field(
        None, max_length=128, description="Name shown in logs, metrics and /v1/models."
    )


class ParallelSection(_Section):
    """How the model is spread over devices (see docs/scaling.md)."""

    tensor_parallel_size: int = Field(
        1, ge=1, le=1024, description="Devices each layer's heads and MLP are split over."
    )
    data_parallel_size: int = Field(
        1, ge=1, le=1024, description="Replicas in the mesh; this engine runs replica 0."
    )


_SECTIONS: dict[str, type[_Section]] = {
    "model": ModelConfig,
    "cache": CacheConfig,
    "scheduler": SchedulerConfig,
    "runtime": RuntimeConfig,
    "parallel": ParallelSection,
}


class EngineConfig(BaseModel):
    """The whole engine configuration, in four sections."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelConfig = ModelConfig()
    cache: CacheConfig = CacheConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    parallel: ParallelSection = ParallelSection()

    @model_validator(mode="after")
    def _check_cross_field_limits(self) -> EngineConfig:
        budget = self.scheduler.max_num_batched_tokens
        if budget is not None and budget < self.scheduler.max_num_seqs:
            raise ValueError(
                f"scheduler.max_num_batched_tokens = {budget} is smaller than "
                f"scheduler.max_num_seqs = {self.scheduler.max_num_seqs}; every running "
                "request needs at least one token per step, so raise it to at least "
                f"{self.scheduler.max_num_seqs}"
            )
        lookup = (self.scheduler.prompt_lookup_min, self.scheduler.prompt_lookup_max)
        if lookup[0] > lookup[1]:
            raise ValueError(
                f"scheduler.prompt_lookup_min = {lookup[0]} is larger than "
                f"scheduler.prompt_lookup_max = {lookup[1]}; the shortest n-gram must be at "
                "most the longest"
            )
        max_len = self.model.max_model_len
        if (
            budget is not None
            and max_len is not None
            and not self.scheduler.enable_chunked_prefill
            and budget < max_len
        ):
            raise ValueError(
                f"scheduler.max_num_batched_tokens = {budget} is smaller than "
                f"model.max_model_len = {max_len} with chunked prefill disabled, so a long "
                "prompt could never be scheduled; raise it or enable chunked prefill"
            )
        return self

    @classmethod
    def field_names(cls) -> dict[str, str]:
        """Flat keyword name -> section, for every configurable field."""
        return {
            name: section for section, model in _SECTIONS.items() for name in model.model_fields
        }

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EngineConfig:
        """Build a config from flat keywords (``page_size=32, max_num_seqs=8, ...``).

        Raises:
            ConfigError: an unknown keyword, or a value outside its range.
        """
        sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        return cls.validated(_route_into(sections, kwargs))

    @classmethod
    def validated(cls, data: dict[str, Any]) -> EngineConfig:
        """``model_validate`` with errors turned into one readable ``ConfigError``."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc)) from None

    def replace(self, **kwargs: Any) -> EngineConfig:
        """A copy with some flat fields changed, validated again."""
        return self.validated(_route_into(self.model_dump(), kwargs))


def _route_into(sections: dict[str, dict[str, Any]], kwargs: dict[str, Any]) -> dict:
    """Put each flat keyword into its section of ``sections``; unknown keywords raise."""
    routes = EngineConfig.field_names()
    unknown = sorted(set(kwargs) - set(routes))
    if unknown:
        raise ConfigError(
            f"unknown configuration field(s) {unknown}; known fields: {sorted(routes)}"
        )
    for key, value in kwargs.items():
        sections[routes[key]][key] = value
    return sections


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field = value: what is allowed``."""
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if not location:
            lines.append(message)
        elif error["type"] == "extra_forbidden":
            lines.append(f"{location}: unknown field")
        else:
            lines.append(f"{location} = {error.get('input')!r}: {message}")
    return "invalid eSurge configuration: " + "; ".join(lines)
