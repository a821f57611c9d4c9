"""Benchmarks and offline evaluation (not run by the tests)."""
