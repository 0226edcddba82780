"""Which part of a tensorflow-datasets split this process reads (flaxish
never imports tensorflow-datasets: pass `even_splits=tfds.even_splits`)."""
import re
from typing import Any, Callable, List, Optional

from flaxish.distributed.arrays import process_index_count

__all__ = ['process_split', 'even_split_sizes']

_PLAIN_SPLIT_RE = re.compile(r'^[A-Za-z_][\w\-]*$')


def even_split_sizes(num_examples: int, count: int,
                     drop_remainder: bool = True) -> List[int]:
  """Sizes of `count` contiguous parts of `num_examples`: each
  `num_examples // count` with `drop_remainder`, else the first
  `num_examples % count` get one more (as `tfds.even_splits`)."""
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
                  process_count: Optional[int] = None,
                  even_splits: Optional[Callable[..., Any]] = None) -> Any:
  """The sub-split of `split` this process reads (disjoint, contiguous
  parts in process order), for `tfds.load`.

  Arguments:
    split: a plain split name (`'train'`) with `num_examples`, any split
      expression otherwise.
    num_examples: the examples of `split`; when given, the result (such as
      `'train[0:640583]'`) is computed here, without tensorflow-datasets.
    drop_remainder: every process gets as many examples (default True, for
      training in lockstep); False: the first `n % P` get one more.
    process_index, process_count: default `jax.process_index()`, `count()`.
    even_splits: `tfds.even_splits`, used without `num_examples`: returns
      `even_splits(split, n=P, drop_remainder=...)[process_index]`.
  Returns `split` itself with one process.
  """
  index, count = process_index_count('process_split', process_index,
                                     process_count)
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
  if even_splits is None:
    raise ValueError(
        'process_split: pass num_examples= (builder.info.splits[split]'
        '.num_examples) to compute the sub-split here, or '
        'even_splits=tfds.even_splits to split a split expression with '
        'tensorflow-datasets (flaxish itself never imports it)')
  return even_splits(split, n=count, drop_remainder=drop_remainder)[index]
