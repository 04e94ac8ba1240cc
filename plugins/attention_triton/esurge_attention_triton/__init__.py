"""eSurge attention backend ``triton``: ragged paged attention as a Pallas kernel for Triton."""
