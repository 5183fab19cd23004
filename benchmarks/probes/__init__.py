"""Small one-off measurements behind the closing notes; run as ``python -m benchmarks.probes.X``."""
