"""Benchmarks (see bench/README.md); the test suite only checks that the harness runs."""
