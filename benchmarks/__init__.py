"""geoseg benchmarks: run on demand (``make bench`` or ``python -m benchmarks NAME``).

Each benchmark prints a table and writes JSON to ``benchmarks/results/``.
"""
