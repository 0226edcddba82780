"""The 2020 public names of `flax.nn.utils`."""
from flaxish.nn._util import CallStack, classproperty

__all__ = ['CallStack', 'classproperty']
