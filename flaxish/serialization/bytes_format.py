"""`to_bytes` / `from_bytes`: state dicts combined with the msgpack wire format.

`to_bytes(x)` is `msgpack_serialize(to_state_dict(x))`, byte for byte the
2020 flax format. `from_bytes` reads those bytes, and also the contents of a
flaxish checkpoint file (header, checksum; see `checkpoint_file`), which it
verifies first.
"""
from typing import Any

from flaxish.serialization.checkpoint_file import MAGIC, read_checkpoint_bytes
from flaxish.serialization.msgpack_decode import msgpack_restore
from flaxish.serialization.msgpack_encode import msgpack_serialize
from flaxish.serialization.state_dict import from_state_dict, to_state_dict

__all__ = ['to_bytes', 'from_bytes']


def to_bytes(target: Any) -> bytes:
  """The msgpack bytes of `target`'s state dict (a Model, Optimizer, ...)."""
  return msgpack_serialize(to_state_dict(target))


def from_bytes(target: Any, encoded_bytes: bytes, *,
               strict: bool = True) -> Any:
  """Restores `target` from `to_bytes` output or a checkpoint file's bytes.

  Arguments:
    target: gives the structure, shapes and dtypes (None: return the raw
      nested dict).
    encoded_bytes: the bytes.
    strict: see `from_state_dict` (default True: any difference raises one
      `RestoreError` listing them all; False returns `(restored, skipped)`).
  Raises:
    MalformedDataError: the bytes are not a msgpack state dict.
    CorruptCheckpointError: checkpoint-file bytes that fail verification.
    RestoreError: (strict) the state does not match `target`.
  """
  if bytes(encoded_bytes[:len(MAGIC)]) == MAGIC:
    state = read_checkpoint_bytes(encoded_bytes)
  else:
    state = msgpack_restore(encoded_bytes)
  return from_state_dict(target, state, strict=strict)
