"""Benchmarks against peer libraries: ``python -m bench SUITE [options]``; results go to ``bench/results/``."""
