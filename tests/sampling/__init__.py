"""Tests of sampling parameters, the batched sampler and stop strings."""
