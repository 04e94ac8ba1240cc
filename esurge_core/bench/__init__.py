"""Benchmark tools behind ``esurge bench``: offline throughput and online serving load."""
