"""Which part of a tensorflow-datasets split this process reads.

    split = distributed.process_split('train', num_examples=1281167)
    ds = tfds.load('imagenet2012', split=split)   # this process's part only

TensorFlow and tensorflow-datasets are imported only when `num_examples` is
not given, inside the call: importing flaxish never imports them.
"""
import re
from typing import Any, List, Optional

import jax

__all__ = ['process_split', 'even_split_sizes']

_PLAIN_SPLIT_RE = re.compile(r'^[A-Za-z_][\w\-]*$')


def even_split_sizes(num_examples: int, count: int,
                     drop_remainder: bool = True) -> List[int]:
  """Sizes of `count` contiguous parts of `num_examples` examples.

  With `drop_remainder` every part has `num_examples // count` examples (the
  rest is not read); without, the first `num_examples % count` parts have one
  more (the rule of `tfds.even_splits`).
  """
  if num_examples < 0 or count < 1:
    raise ValueError(f'even_split_sizes: need num_examples >= 0 and count >= '
                     f'1, got {num_examples} and {count}')
  base, rest = divmod(num_examples, count)
  if drop_remainder:
    return [base] * count
  return [base + (1 if i < rest else 0) for i in range(count)]


def process_split(split: str = 'train', *,
                  num_examples: Optional[int] = None,
                  drop_remainder: bool = True,
                  process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> Any:
  """The sub-split of `split` that this process reads, for `tfds.load`.

  The processes get disjoint, contiguous parts, in process order.

  Arguments:
    split: a tfds split; a plain name (`'train'`) when `num_examples` is
      given, any split expression (`'train[:90%]'`) otherwise.
    num_examples: the number of examples of `split`
      (`builder.info.splits[split].num_examples`); when given, the result is
      computed here, without tensorflow-datasets.
    drop_remainder: True (default): every process gets the same number of
      examples (needed when the processes step through their parts in
      lockstep, as in training); False: the first `n % P` processes get one
      more (evaluation, with padding to equal batch counts).
    process_index: default `jax.process_index()`.
    process_count: default `jax.process_count()`.

  Returns:
    With one process, `split` unchanged. With `num_examples`, a string such
    as `'train[0:640583]'`. Otherwise `tfds.even_splits(split,
    n=process_count, drop_remainder=...)[process_index]`, a split object
    `tfds.load` accepts.
  """
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if not 0 <= index < count:
    raise ValueError(f'process_split: process_index={index} is not in '
                     f'[0, {count})')
  if count == 1:
    return split
  if num_examples is not None:
    if not _PLAIN_SPLIT_RE.match(split):
      raise ValueError(
          f'process_split: with num_examples, split must be a plain split '
          f'name such as "train", got {split!r}; leave num_examples out to '
          'split an expression with tfds.even_splits')
    sizes = even_split_sizes(num_examples, count, drop_remainder)
    start = sum(sizes[:index])
    return f'{split}[{start}:{start + sizes[index]}]'
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        'process_split needs tensorflow-datasets (pip install '
        'tensorflow-datasets), or pass num_examples= to compute the '
        'sub-split without it') from e
  if not hasattr(tfds, 'even_splits'):
    raise ImportError(
        f'process_split: this tensorflow-datasets ({tfds.__version__}) has no '
        'tfds.even_splits; upgrade it, or pass num_examples=')
  return tfds.even_splits(split, n=count,
                          drop_remainder=drop_remainder)[index]
