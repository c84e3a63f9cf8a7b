"""Benchmarks and demos of the `sdr` library (run as `python -m benchmarks.<name>`)."""
