"""flaxish vs hand-written JAX and Flax Linen (see README.md)."""
