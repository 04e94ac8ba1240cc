"""The version of the eSurge core (kept in one place)."""

__version__ = "0.1.0"
