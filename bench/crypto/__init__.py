"""Benchmark: exchange.agefmt against the stock age CLI on a large file (run: python -m bench.crypto)."""
