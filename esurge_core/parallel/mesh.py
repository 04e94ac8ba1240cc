"""The device mesh of an engine: axes ("data", "tensor"), built from `ParallelConfig`.

"tensor" splits one model (attention heads, MLP columns, vocabulary, KV heads) over
devices that run every step together. "data" counts independent replicas: eSurge serves
data parallelism as one engine per row of the mesh (see `replica_meshes` and
docs/scaling.md), never by splitting one engine's ragged batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from esurge_core.parallel.errors import ParallelConfigError
from esurge_core.parallel.parallel_config import ParallelConfig

DATA_AXIS = "data"
TENSOR_AXIS = "tensor"
#: The mesh axes, outermost first.
MESH_AXES = (DATA_AXIS, TENSOR_AXIS)
# Auto axes: XLA's SPMD partitioner propagates the weight shardings through the unchanged
# model code (Explicit axes would demand a sharding annotation on every gather).
_AXIS_TYPES = (AxisType.Auto, AxisType.Auto)


def mesh_shape(config: ParallelConfig, num_devices: int) -> tuple[int, int]:
    """Return the (data, tensor) sizes the config asks for, given `num_devices` devices.

    `sharding_axis_dims` wins over the two sizes; its -1 takes the remaining devices.

    Raises:
        ParallelConfigError: the layout needs more devices than there are, or -1 does not
            come out whole.
    """
    if config.sharding_axis_dims is not None:
        dims = list(config.sharding_axis_dims)
        if -1 in dims:
            known = math.prod(d for d in dims if d != -1)
            if num_devices % known:
                raise ParallelConfigError(
                    f"sharding_axis_dims = {tuple(config.sharding_axis_dims)}: {num_devices} "
                    f"devices are not a multiple of {known}, so -1 has no whole size"
                )
            dims[dims.index(-1)] = num_devices // known
        shape = (dims[0], dims[1])
    else:
        shape = (config.data_parallel_size, config.tensor_parallel_size)
    needed = shape[0] * shape[1]
    if needed > num_devices:
        raise ParallelConfigError(
            f"data_parallel_size x tensor_parallel_size = {shape[0]} x {shape[1]} = {needed} "
            f"devices, but only {num_devices} are available "
            f"({jax.default_backend()}); lower the sizes so the product is <= {num_devices}"
        )
    return shape


def build_mesh(config: ParallelConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Build the ("data", "tensor") mesh over the first data x tensor devices.

    Args:
        config: The sizes (or `sharding_axis_dims`).
        devices: Devices to use, in order; default `jax.devices()` (every process's devices
            in a multi-host job, so call it after `initialize_distributed`).

    Raises:
        ParallelConfigError: more devices are needed than given.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(config, len(devices))
    used = devices[: shape[0] * shape[1]]
    if len(used) == len(jax.devices()) and devices == list(jax.devices()):
        # Topology-aware order (TPU slices, multi-host GPU) when the mesh takes every device.
        return jax.make_mesh(shape, MESH_AXES, axis_types=_AXIS_TYPES, devices=used)
    return Mesh(np.asarray(used, dtype=object).reshape(shape), MESH_AXES, axis_types=_AXIS_TYPES)


def replica_meshes(mesh: Mesh) -> list[Mesh]:
    """Split a mesh into one mesh per data row: the devices of each engine replica.

    Each result has axes ("data", "tensor") with data size 1, so the shardings built for
    one replica are the same whatever the replica.
    """
    rows = mesh.devices.reshape(mesh.devices.shape[0], -1)
    return [Mesh(row.reshape(1, -1), MESH_AXES, axis_types=_AXIS_TYPES) for row in rows]


def tensor_parallel_size(mesh: Mesh) -> int:
    """The size of the mesh's "tensor" axis."""
    return int(mesh.shape[TENSOR_AXIS])
