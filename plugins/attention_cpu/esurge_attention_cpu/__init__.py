"""eSurge's native CPU backends, C++ kernels through the XLA FFI: ragged paged attention
(attention backend ``cpu``) and decode-sized weight products (matmul backend ``cpu``).

This package's ``plugin`` module is what the ``esurge`` entry point loads; it imports nothing
heavy. The C++ sources are compiled for the host CPU on first use (``native_build``) and the
kernels are imported only when a backend is selected.
"""
