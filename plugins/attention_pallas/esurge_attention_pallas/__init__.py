"""eSurge attention backend ``pallas``: ragged paged attention as a Pallas TPU kernel."""
