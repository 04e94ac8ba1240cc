"""Sampling: request parameters, the batched on-device sampler and stop-string handling."""

from esurge_core.sampling.batch import SamplingBatch, SamplingRow
from esurge_core.sampling.params import SamplingParams
from esurge_core.sampling.rng import request_seed
from esurge_core.sampling.sampler import SamplerOutput, sample
from esurge_core.sampling.stop_strings import StopCheck, StopStringMatcher

__all__ = [
    "SamplerOutput",
    "SamplingBatch",
    "SamplingParams",
    "SamplingRow",
    "StopCheck",
    "StopStringMatcher",
    "request_seed",
    "sample",
]
