"""eSurge's XLA attention backend (pure jax.numpy ragged paged attention).

This package's ``plugin`` module is what the ``esurge`` entry point loads; it imports nothing
heavy. The kernel lives in ``kernel`` and is imported only when the backend is selected.
"""
