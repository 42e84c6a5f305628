"""Reproducible edge-bench figure sets: ``python -m benchmarks imagenet|hymenoptera``."""
