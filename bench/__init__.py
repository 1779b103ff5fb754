"""Micro-benchmarks of m42d's hot paths, run as ``python -m bench.NAME``."""
