"""Specification of the Pallas TPU and Triton ragged paged attention kernels (interpret mode)."""
