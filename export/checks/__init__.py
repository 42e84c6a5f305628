"""Checks of an export: parity with PyTorch, accuracy and latency per format, release gates, eval sets."""
