"""eSurge's native CPU attention backend (C++ ragged paged attention through the XLA FFI).

This package's ``plugin`` module is what the ``esurge`` entry point loads; it imports nothing
heavy. The C++ source is compiled for the host CPU on first use (``native_build``) and the
kernel is imported only when the backend is selected.
"""
