"""Exceptions of the eSurge core that a user can act on.

Every message says what was wrong, the offending value, and what is allowed or what to do.
"""

from __future__ import annotations


class ESurgeError(Exception):
    """Base class of every error raised on purpose by eSurge."""


class PluginError(ESurgeError):
    """A plugin could not be loaded, or registered something invalid."""


class DuplicateComponentError(PluginError):
    """Two different distributions registered a component of one kind under one name."""


class ComponentSelectionError(ESurgeError):
    """A component (attention backend, scheduler, ...) could not be selected by name."""


class UnknownComponentError(ComponentSelectionError, LookupError):
    """No installed plugin provides a component of that kind under that name."""


class UnusableComponentError(ComponentSelectionError):
    """The component is installed but cannot serve this configuration on this machine."""

    def __init__(self, message: str, reasons: dict[str, list[str]]) -> None:
        super().__init__(message)
        #: Every reason, per component name, why it cannot serve the configuration.
        self.reasons = reasons


class ConfigError(ESurgeError, ValueError):
    """A configuration value is invalid; the message names the field, the value and the range."""
