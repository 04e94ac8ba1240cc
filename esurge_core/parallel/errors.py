"""Errors of the parallel layer: a mesh or a model that cannot be split as configured."""

from __future__ import annotations

from esurge_core.errors import ConfigError


class ParallelConfigError(ConfigError):
    """The requested parallel layout cannot be built for these devices or this model.

    The message names the sizes involved (devices, mesh axes, heads) and what would work.
    """
