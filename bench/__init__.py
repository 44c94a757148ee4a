"""Benchmarks: one harness (`bench.harness`), scenarios as small files (`bench.scenarios`).

Run `python -m bench <scenario> [options]`; they print figures and assert nothing.
"""
