"""Benchmarks: each suite is a folder bench/<suite>/run.py with a main(argv) -> int."""
