"""Scaling past one device with JAX's own SPMD machinery (see docs/scaling.md).

- `ParallelConfig`: tensor/data sizes and multi-host coordinates (config or `ESURGE_*` env).
- `build_mesh`, `replica_meshes`: the ("data", "tensor") device mesh; one engine per data row.
- `plan_tensor_parallel`: param, KV-cache and input shardings of a model over a mesh.
- `initialize_distributed`, `broadcast_from_leader`: one process per host, leader schedules.
- `collectives`: what a compiled step communicates, read from its HLO.
"""

from esurge_core.parallel.errors import ParallelConfigError
from esurge_core.parallel.hlo_collectives import Collective, collectives, count_by_kind
from esurge_core.parallel.mesh import (
    DATA_AXIS,
    MESH_AXES,
    TENSOR_AXIS,
    build_mesh,
    mesh_shape,
    replica_meshes,
)
from esurge_core.parallel.multihost import (
    broadcast_from_leader,
    initialize_distributed,
    is_leader,
)
from esurge_core.parallel.parallel_config import ENV_VARS, ParallelConfig
from esurge_core.parallel.sharding_rules import (
    ShardingRules,
    check_tensor_parallel,
    tensor_parallel_rules,
)
from esurge_core.parallel.tensor_parallel import (
    TensorParallelPlan,
    plan_tensor_parallel,
    put_global,
)

__all__ = [
    "DATA_AXIS",
    "ENV_VARS",
    "MESH_AXES",
    "TENSOR_AXIS",
    "Collective",
    "ParallelConfig",
    "ParallelConfigError",
    "ShardingRules",
    "TensorParallelPlan",
    "broadcast_from_leader",
    "build_mesh",
    "check_tensor_parallel",
    "collectives",
    "count_by_kind",
    "initialize_distributed",
    "is_leader",
    "mesh_shape",
    "plan_tensor_parallel",
    "put_global",
    "replica_meshes",
    "tensor_parallel_rules",
]
