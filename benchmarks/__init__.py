"""Benchmarks of the library and the harness, run from the checkout: `python -m benchmarks.<name>`."""
