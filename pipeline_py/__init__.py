"""Robust unlearning study: unlearn, noise, distill, relearn, evaluate (the UNDO pipeline)."""
__version__ = "0.1.0"
