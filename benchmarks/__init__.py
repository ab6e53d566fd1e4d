"""Benchmarks of lunos-bots: reply latency, concurrency, ordering, renderer, memory, chat client.

Run with `make bench` (or `python -m benchmarks [--quick]` with REDIS_URL set). They print one
table and never assert timings: each speed target is a named constant with its reason, reported
PASS or MISS. The process exits non-zero only when a benchmark crashed.
"""
