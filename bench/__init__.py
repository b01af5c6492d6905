"""Benchmarks, run by `make bench`; results are written down in docs/benchmarks.md."""
