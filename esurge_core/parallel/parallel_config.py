"""`ParallelConfig`: how many devices an engine spans and how one host joins a multi-host job.

The fields are meant to sit in the engine config (see docs/scaling.md); every one can also
come from the environment (`ESURGE_TENSOR_PARALLEL_SIZE`, `ESURGE_COORDINATOR_ADDRESS`, ...),
which is how a Kubernetes pod or a launcher script passes them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from esurge_core.parallel.errors import ParallelConfigError

#: Environment variable of each field (`ParallelConfig.from_env`).
ENV_VARS: dict[str, str] = {
    "tensor_parallel_size": "ESURGE_TENSOR_PARALLEL_SIZE",
    "data_parallel_size": "ESURGE_DATA_PARALLEL_SIZE",
    "sharding_axis_dims": "ESURGE_SHARDING_AXIS_DIMS",
    "coordinator_address": "ESURGE_COORDINATOR_ADDRESS",
    "num_processes": "ESURGE_NUM_PROCESSES",
    "process_id": "ESURGE_PROCESS_ID",
}


class ParallelConfig(BaseModel):
    """Device layout of one engine, and its place in a multi-host job.

    Attributes:
        tensor_parallel_size: Devices that share one model's weights and KV cache (the
            "tensor" mesh axis). Must divide the model's query heads.
        data_parallel_size: Independent replicas (the "data" mesh axis); each replica is one
            engine over its own `tensor_parallel_size` devices (see `replica_meshes`).
        sharding_axis_dims: Explicit (data, tensor) mesh shape; overrides the two sizes
            above. One entry may be -1: "all remaining devices".
        coordinator_address: "host:port" of process 0, for `jax.distributed` (multi-host).
        num_processes: Processes in the job (one per host); 1 means single-host.
        process_id: This process's rank, 0 .. num_processes - 1.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tensor_parallel_size: int = Field(1, ge=1, le=4096)
    data_parallel_size: int = Field(1, ge=1, le=4096)
    sharding_axis_dims: tuple[int, int] | None = None
    coordinator_address: str | None = None
    num_processes: int = Field(1, ge=1, le=65536)
    process_id: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> ParallelConfig:
        if self.sharding_axis_dims is not None:
            dims = self.sharding_axis_dims
            if any(d == 0 or d < -1 for d in dims) or list(dims).count(-1) > 1:
                raise ValueError(
                    f"sharding_axis_dims = {dims}: each entry must be >= 1, or -1 for "
                    "'the remaining devices' (at most one -1)"
                )
        if self.process_id >= self.num_processes:
            raise ValueError(
                f"process_id = {self.process_id} is out of range for num_processes = "
                f"{self.num_processes}; allowed: 0 .. {self.num_processes - 1}"
            )
        if self.num_processes > 1 and not self.coordinator_address:
            raise ValueError(
                f"num_processes = {self.num_processes} needs coordinator_address "
                "('host:port' of process 0, e.g. ESURGE_COORDINATOR_ADDRESS=esurge-0.esurge:6379)"
            )
        return self

    @property
    def is_multi_host(self) -> bool:
        """Whether this process is one of several (`jax.distributed` must be initialised)."""
        return self.num_processes > 1

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> ParallelConfig:
        """Build the config from `ESURGE_*` variables (see `ENV_VARS`); `overrides` win.

        `ESURGE_SHARDING_AXIS_DIMS` is written "2,4" (data, tensor).

        Raises:
            ParallelConfigError: a variable is not a number, or a value is out of range.
        """
        environ = os.environ if environ is None else environ
        data: dict[str, object] = {}
        for field, var in ENV_VARS.items():
            raw = environ.get(var)
            if raw is None or raw.strip() == "":
                continue
            data[field] = raw.strip()
            if field == "sharding_axis_dims":
                data[field] = tuple(part.strip() for part in raw.split(","))
        data.update(overrides)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'config'} = {e.get('input')!r}: "
                f"{e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise ParallelConfigError(
                f"invalid parallel configuration: {problems} (environment variables: "
                f"{', '.join(ENV_VARS.values())})"
            ) from None
