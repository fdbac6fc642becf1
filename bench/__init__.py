"""Benchmarks on real speech: latency of pruned models and accuracy versus MACs (not part of the tests)."""
