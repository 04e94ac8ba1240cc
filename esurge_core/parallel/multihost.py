"""Multi-host wiring: `jax.distributed` from config/environment, and step-input broadcast.

eSurge runs one process per host. All processes build the same global mesh (every host's
devices) and call the same compiled step in lock step, as JAX's multi-controller model
requires. Only process 0 (the leader) runs the HTTP frontend and the scheduler; each step
it broadcasts the packed step inputs with `broadcast_from_leader`, and the followers run
the step on what they receive. The leader alone decides, so hosts can never diverge
because requests reached them in another order or at another time (see docs/scaling.md).
"""

from __future__ import annotations

import pickle
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from esurge_core.parallel.parallel_config import ParallelConfig

#: JAX's CPU collectives backend used for multi-process CPU meshes (tests, CPU clusters).
CPU_COLLECTIVES = "gloo"


def initialize_distributed(config: ParallelConfig | None = None) -> bool:
    """Join the multi-host job described by `config` (default: `ParallelConfig.from_env()`).

    Call it once per process, before anything touches a JAX device. With
    `num_processes == 1` it does nothing. CPU collectives are switched to gloo first so a
    CPU mesh across processes works (harmless on GPU/TPU).

    Returns:
        Whether `jax.distributed` was initialised.

    Raises:
        ParallelConfigError: the environment holds an invalid value.
    """
    config = ParallelConfig.from_env() if config is None else config
    if not config.is_multi_host:
        return False
    jax.config.update("jax_cpu_collectives_implementation", CPU_COLLECTIVES)
    jax.distributed.initialize(
        coordinator_address=config.coordinator_address,
        num_processes=config.num_processes,
        process_id=config.process_id,
    )
    return True


def is_leader() -> bool:
    """Whether this process schedules and broadcasts (process 0)."""
    return jax.process_index() == 0


def _broadcast_array(array: np.ndarray) -> np.ndarray:
    return np.asarray(multihost_utils.broadcast_one_to_all(array, is_source=is_leader()))


def broadcast_from_leader(tree: Any = None) -> Any:
    """Send a pytree of host arrays from process 0 to every process; return it everywhere.

    The leader passes the tree; followers pass nothing (their argument is ignored). Shapes
    may change from call to call (bucketed steps): the structure, shapes and dtypes travel
    first as a small pickled header, then every leaf. Single-process it returns `tree`.
    """
    if jax.process_count() == 1:
        return tree
    if is_leader():
        leaves, treedef = jax.tree.flatten(tree)
        leaves = [np.asarray(leaf) for leaf in leaves]
        header = pickle.dumps((treedef, [(leaf.shape, leaf.dtype.str) for leaf in leaves]))
        size = np.asarray([len(header)], np.int64)
    else:
        size = np.zeros(1, np.int64)
    size = int(_broadcast_array(size)[0])
    raw = np.frombuffer(header, np.uint8) if is_leader() else np.zeros(size, np.uint8)
    treedef, layout = pickle.loads(_broadcast_array(raw).tobytes())
    if not is_leader():
        leaves = [np.zeros(shape, np.dtype(dtype)) for shape, dtype in layout]
    received = [_broadcast_array(leaf) for leaf in leaves]
    return jax.tree.unflatten(treedef, received)
