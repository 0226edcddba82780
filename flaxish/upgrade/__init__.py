"""Upgrade 2020 flax / JAX code: `python -m flaxish.upgrade --write PATH...`.
`codemod` is the LibCST rewrite (extra `upgrade`), `compat` the runtime helpers
rewritten code may use (no LibCST). See docs/migration.md."""
__all__ = []
