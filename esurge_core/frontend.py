"""The interface of a frontend plugin: one ``esurge <name>`` sub-command."""

from __future__ import annotations

import argparse
from typing import Protocol, runtime_checkable


@runtime_checkable
class Frontend(Protocol):
    """A way to drive the engine (HTTP server, interactive chat, batch generation...).

    The registered loader points at a class; the CLI instantiates it with no arguments.
    """

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the sub-command's arguments."""
        ...

    def run(self, args: argparse.Namespace) -> int:
        """Run the sub-command; the return value is the process exit status."""
        ...
