"""Placeholder: written by the traverse_util/optim work."""
__all__ = []
