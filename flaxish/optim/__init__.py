"""Optimizers (placeholder)."""
__all__ = []
