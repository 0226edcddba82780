"""A SentencePiece subword tokenizer trained on the training text.

The 2020 example used tfds's `lm1b/subwords32k` vocabulary, which no longer
exists; instead a SentencePiece unigram model is trained on the training
split and kept in the workdir (`tokenizer.model`), so a resumed run reuses
it.

Ids: 0 is padding (and the start token the model shifts in), 1 ends a
sentence, 2 is unknown (never produced: unknown characters fall back to
their UTF-8 bytes). Normalization is the identity, so
`decode(encode(text)) == text` for any text.
"""
import io
import os
from typing import Iterable, List, Optional, Sequence

import numpy as np
import sentencepiece as spm

PAD_ID = 0
EOS_ID = 1
FILENAME = 'tokenizer.model'


class Tokenizer:
  """Text <-> token ids with a trained SentencePiece model."""

  def __init__(self, model_proto: bytes):
    self.model_proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

  pad_id = PAD_ID
  eos_id = EOS_ID

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, texts: Sequence[str]) -> List[np.ndarray]:
    """Token ids (int32, without the end-of-sentence id) of each text."""
    return [np.asarray(ids, np.int32) for ids in self._sp.encode(list(texts))]

  def decode(self, ids: Iterable[int]) -> str:
    """The text of `ids`, up to the first end-of-sentence id; padding is
    skipped."""
    out = []
    for i in np.asarray(ids).tolist():
      if i == EOS_ID:
        break
      if i != PAD_ID:
        out.append(i)
    return self._sp.decode(out)

  def save(self, path: str) -> None:
    """Writes the model file (atomically: a temp file, then a rename)."""
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'wb') as f:
      f.write(self.model_proto)
    os.replace(tmp, path)


def train_tokenizer(texts: Iterable[str], vocab_size: int,
                    max_chars: int = 10_000_000) -> Tokenizer:
  """Trains a unigram SentencePiece model on (at most `max_chars`
  characters of) `texts`. With too little text the vocabulary may come out
  smaller than `vocab_size`."""

  def limited():
    seen = 0
    for text in texts:
      if seen >= max_chars:
        return
      seen += len(text)
      yield text

  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=limited(), model_writer=model, vocab_size=vocab_size,
      model_type='unigram', character_coverage=1.0, byte_fallback=True,
      normalization_rule_name='identity', remove_extra_whitespaces=False,
      hard_vocab_limit=False, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=2,
      bos_id=-1, num_threads=min(16, os.cpu_count() or 1), minloglevel=2)
  return Tokenizer(model.getvalue())


def load_or_train_tokenizer(workdir: Optional[str], texts: Iterable[str],
                            vocab_size: int,
                            max_chars: int = 10_000_000) -> Tokenizer:
  """The tokenizer saved in `workdir`, or a new one trained on `texts` (and
  saved there when `workdir` is given)."""
  path = os.path.join(workdir, FILENAME) if workdir else None
  if path and os.path.exists(path):
    with open(path, 'rb') as f:
      return Tokenizer(f.read())
  tokenizer = train_tokenizer(texts, vocab_size, max_chars)
  if path:
    os.makedirs(workdir, exist_ok=True)
    tokenizer.save(path)
  return tokenizer

