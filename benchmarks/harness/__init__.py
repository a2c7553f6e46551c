"""Helpers for ``python -m benchmarks.latency``: test audio, a managed server subprocess, the load
generator, statistics and the report. A pure HTTP client: it imports no server code."""
