"""Upgrade 2020 flax / JAX code: `python -m flaxish.upgrade --write PATH...`.

`flaxish.upgrade.codemod` holds the LibCST rewrite (needs the `upgrade`
extra); `flaxish.upgrade.compat` holds the small runtime helpers that the
rewritten code may import (no LibCST needed). See docs/migration.md.
"""

__all__ = []
