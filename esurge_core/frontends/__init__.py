"""The core's own CLI frontends: ``esurge generate`` and ``esurge chat``."""
