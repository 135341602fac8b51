"""Benchmarks for hadamard_lit (run from the repository root: ``python -m benchmarks.step_time``)."""
