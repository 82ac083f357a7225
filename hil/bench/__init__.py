"""Benchmarks behind ``itb bench``. Each module exposes ``run(args) -> dict``."""
