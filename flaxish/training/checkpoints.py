"""Checkpoints that survive crashes: save, restore, keep the newest N.

    path = checkpoints.save_checkpoint(ckpt_dir, optimizer, step, keep=3)
    optimizer = checkpoints.restore_checkpoint(ckpt_dir, optimizer)

A checkpoint is exactly the file `<ckpt_dir>/<prefix><step>`, `step` an int
(`str(step)`), plus its sidecar `<prefix><step>.meta`: no other name is ever
listed, restored or deleted. The data file is plain msgpack, `to_bytes` of
the target (`msgpack.unpackb`, `serialization.msgpack_restore` and 2020 flax
read it). The sidecar is one line of JSON with the data's size and CRC-32
and, last, its own CRC-32:

    {"format":"flaxish.checkpoint","format_version":2,"size":N,"crc32":C,
     "replaces":null,"check":K}

Saving writes the data to a temp file `.<name>.<host>.<pid>.<random>.tmp`
and fsyncs it, then writes the sidecar the same way and renames it into
place (the commit marker), then renames the data onto `<name>` and fsyncs the
directory. A crash at any moment leaves earlier checkpoints intact; a data
file counts only if it matches its sidecar (`replaces` is the file an
overwrite replaces, accepted until the rename). A data file without a sidecar
(a 2020 checkpoint, or a copy of the data alone) restores unverified, with an
info message; so do files of format version 1 (a `\\xc1FLXCKPT` header and
a checksummed footer, no sidecar). Temp files are removed by the process
that wrote them, or later once provably dead: their owner (same host) is
gone, or they are older than `STALE_TEMP_SECONDS`. With several processes
only process 0 writes. Only the standard library touches files.
"""
import atexit
import json
import logging
import os
import re
import socket
import struct
import sys
import threading
import time
import uuid
import warnings
import zlib
from typing import Any, List, Optional, Sequence, Tuple

import jax
import numpy as np

from flaxish.serialization.msgpack import (CorruptCheckpointError,
                                           UnsupportedCheckpointError,
                                           read_checkpoint, read_msgpack,
                                           to_numpy, write_checkpoint)
from flaxish.serialization.state_dict import (RestoreError, from_state_dict,
                                              to_state_dict)

__all__ = ['save_checkpoint', 'restore_checkpoint', 'latest_checkpoint',
           'natural_sort', 'AsyncCheckpointer', 'CorruptCheckpointError',
           'SIGNED_FLOAT_RE', 'UNSIGNED_FLOAT_RE', 'FORMAT_VERSION',
           'META_SUFFIX', 'STALE_TEMP_SECONDS']

# Single-group regular expressions for int or float substrings (2020 names):
# with the sign, and without it (the sign is then a separator).
SIGNED_FLOAT_RE = re.compile(
    r'([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)')
UNSIGNED_FLOAT_RE = re.compile(
    r'[-+]?((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)')
FORMAT_VERSION = 2
META_SUFFIX = '.meta'
STALE_TEMP_SECONDS = 24 * 3600
_FORMAT = 'flaxish.checkpoint'
_HOST = re.sub(r'[^A-Za-z0-9-]', '-', socket.gethostname()) or 'host'
_TEMP_RE = re.compile(r'\..+\.([A-Za-z0-9-]+)\.(\d+)\.[0-9a-f]+\.tmp')
_log = logging.getLogger(__name__)
_in_flight = set()  # temp files this process is writing
_lock = threading.Lock()


def natural_sort(file_list: Sequence[str], signed: bool = True) -> List[str]:
  """Sorts names with their numbers compared as numbers.

  'ckpt_9' < 'ckpt_10'; numbers may have a decimal point and an exponent
  ('1.5e3') and, with `signed`, a sign ('file_-0.2' < 'file_0.1').
  """
  regex = SIGNED_FLOAT_RE if signed else UNSIGNED_FLOAT_RE
  # Text and numbers alternate, so equal positions always hold equal types.
  return sorted(file_list, key=lambda name: [
      float(p) if i % 2 else p for i, p in enumerate(regex.split(name))])


def _step_str(step: Any) -> str:
  if isinstance(step, (np.ndarray, np.generic, jax.Array)):
    step = np.asarray(step).item()
  if isinstance(step, float) and step.is_integer():
    step = int(step)
  if isinstance(step, bool) or not isinstance(step, int):
    raise ValueError(f'step={step!r}: a checkpoint is named <prefix><integer '
                     'step>; pass an int')
  return str(step)


def _list(ckpt_dir: str, prefix: str) -> List[Tuple[int, str]]:
  """(step, path) of every checkpoint with `prefix`, lowest step first."""
  try:
    names = os.listdir(ckpt_dir)
  except (FileNotFoundError, NotADirectoryError):
    return []
  name_re = re.compile(re.escape(prefix) + r'(-?(?:0|[1-9][0-9]*))')
  found = [(int(m.group(1)), os.path.join(ckpt_dir, n)) for n in names
           for m in [name_re.fullmatch(n)] if m]
  return sorted((s, p) for s, p in found if os.path.isfile(p))


def latest_checkpoint(ckpt_dir: str,
                      prefix: str = 'checkpoint_') -> Optional[str]:
  """The path of the highest-step checkpoint in `ckpt_dir`, or None (names
  only; `restore_checkpoint` verifies the contents)."""
  found = _list(os.fspath(ckpt_dir), prefix)
  return found[-1][1] if found else None


def _read_meta(path: str) -> Optional[dict]:
  """The sidecar of `path`; None if there is none."""
  try:
    with open(path + META_SUFFIX, 'rb') as f:
      raw = f.read(4096)
  except FileNotFoundError:
    return None
  try:
    meta = json.loads(raw)
    ok = raw == _meta_bytes(meta) and meta['format'] == _FORMAT
    version = meta['format_version'] if ok else 0
  except (ValueError, KeyError, TypeError, AttributeError):
    ok = False
  if ok and version > FORMAT_VERSION:
    raise UnsupportedCheckpointError(
        f'checkpoint {path} has format version {version}; this flaxish '
        f'reads versions up to {FORMAT_VERSION}: upgrade flaxish')
  if not ok or len(meta) != 6 or not all(type(v) is int for v in (  # pylint: disable=unidiomatic-typecheck
      meta.get('size'), meta.get('crc32'), *(meta.get('replaces') or ()))):
    raise CorruptCheckpointError(path, f'its sidecar {path}{META_SUFFIX} is '
                                 'damaged (an incomplete save?)')
  return meta


def _meta_bytes(meta: dict) -> bytes:
  """The sidecar's JSON line, its own CRC-32 last ("check")."""
  meta = {k: v for k, v in meta.items() if k != 'check'}
  body = json.dumps(meta, separators=(',', ':'))
  return json.dumps(dict(meta, check=zlib.crc32(body.encode())),
                    separators=(',', ':')).encode() + b'\n'


def _read_v1(path: str) -> Any:
  """Format version 1: header, msgpack body, footer with CRC-32s."""
  with open(path, 'rb') as f:
    size = os.fstat(f.fileno()).st_size
    header = f.read(16)
    f.seek(max(size - 24, 0))
    footer = f.read(24)
    end, body_size, body_crc, meta_crc = struct.unpack('<8sQII', footer)
    if size < 40 or end != b'FLXCKEND' or body_size + 40 != size or zlib.crc32(
        footer[:20], zlib.crc32(header)) != meta_crc:
      raise CorruptCheckpointError(path, 'truncated or damaged (version 1)')
    f.seek(16)
    crc, left = 0, body_size
    while left:
      chunk = f.read(min(left, 1 << 24))
      crc, left = zlib.crc32(chunk, crc), left - len(chunk)
    if crc != body_crc:
      raise CorruptCheckpointError(path, 'damaged (checksum mismatch)')
    f.seek(16)
    return read_msgpack(f, body_size)  # the footer that follows is ignored


def _read(path: str) -> Any:
  """The verified state dict of the checkpoint `path`."""
  meta = _read_meta(path)
  if meta is None:
    with open(path, 'rb') as f:
      if f.read(8) == b'\xc1FLXCKPT':
        return _read_v1(path)
    _log.info('checkpoint %s has no sidecar %s: read as a 2020 flax '
              'checkpoint, unverified', path, META_SUFFIX)
    return read_checkpoint(path)
  replaced = meta['replaces']
  return read_checkpoint(path, [meta] + (
      [{'size': replaced[0], 'crc32': replaced[1]}] if replaced else []))


def _fsync_dir(path: str) -> None:
  if os.name == 'posix':
    fd = os.open(path, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


def _is_dead(name: str, path: str) -> bool:
  """Whether the temp file `name` belongs to no running save."""
  m = _TEMP_RE.fullmatch(name)
  if m and m.group(1) == _HOST and os.name == 'posix':
    pid = int(m.group(2))
    if pid == os.getpid():
      with _lock:
        return path not in _in_flight
    try:
      os.kill(pid, 0)  # signal 0: only asks whether it exists
    except ProcessLookupError:
      return True
    except OSError:
      pass
  try:
    return time.time() - os.stat(path).st_mtime > STALE_TEMP_SECONDS
  except OSError:
    return False


def _clean_up(ckpt_dir: str, prefix: str, keep: Optional[int],
              saved: str) -> None:
  """Removes dead temp files, then all but the `keep` highest steps."""
  for name in os.listdir(ckpt_dir):
    path = os.path.join(ckpt_dir, name)
    if name.startswith('.' + prefix) and name.endswith('.tmp') and _is_dead(
        name, path):
      _remove(path)
  found = _list(ckpt_dir, prefix)
  for _, path in found[:-keep] if keep else []:
    _remove(path)
    _remove(path + META_SUFFIX)
    if path == saved:
      warnings.warn(
          f'checkpoint {saved} was deleted right after saving: keep={keep} '
          f'keeps the highest steps, and higher ones exist in {ckpt_dir} ('
          f'{", ".join(os.path.basename(p) for _, p in found[-keep:])})',
          stacklevel=4)


def _remove(path: str) -> None:
  try:
    os.remove(path)
  except FileNotFoundError:
    pass
  except OSError as e:
    _log.warning('could not remove %s: %s', path, e)


def _prepare(path: str, overwrite: bool) -> Optional[List[int]]:
  """Checks the step's name; returns the `replaces` entry of the sidecar."""
  if not os.path.lexists(path):
    return None
  if overwrite:
    try:
      meta = _read_meta(path)
    except (CorruptCheckpointError, UnsupportedCheckpointError):
      meta = None
    return [meta['size'], meta['crc32']] if meta else None
  try:
    _read(path)
  except CorruptCheckpointError as e:
    for suffix in ('', META_SUFFIX):
      if os.path.lexists(path + suffix):
        os.replace(path + suffix, path + suffix + '.corrupt')
    warnings.warn(f'checkpoint {path} is corrupt or incomplete ({e.reason}); '
                  f'saving over it, the bad copy is kept as {path}.corrupt',
                  stacklevel=4)
    return None
  raise ValueError(f'checkpoint {path} already exists; pass overwrite=True '
                   'to replace it, or save under a new step')


def _write_temp(path: str, write, temps: List[str]) -> Any:
  tmp = os.path.join(os.path.dirname(path), f'.{os.path.basename(path)}.'
                     f'{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp')
  temps.append(tmp)
  with _lock:
    _in_flight.add(tmp)
  with open(tmp, 'xb') as f:
    result = write(f)
    f.flush()
    os.fsync(f.fileno())
  return tmp, result


def _write_atomically(state: Any, path: str, prefix: str,
                      keep: Optional[int], overwrite: bool) -> None:
  ckpt_dir, temps = os.path.dirname(path) or '.', []
  try:
    os.makedirs(ckpt_dir, exist_ok=True)
    replaces = _prepare(path, overwrite)
    data_tmp, digest = _write_temp(path, lambda f: write_checkpoint(f, state),
                                   temps)
    meta = {'format': _FORMAT, 'format_version': FORMAT_VERSION, **digest,
            'replaces': replaces}
    meta_tmp, _ = _write_temp(path + META_SUFFIX,
                              lambda f: f.write(_meta_bytes(meta)), temps)
    os.replace(meta_tmp, path + META_SUFFIX)
    os.replace(data_tmp, path)
    _fsync_dir(ckpt_dir)
  except OSError as e:
    raise OSError(e.errno, f'{e.strerror or e}: could not save checkpoint '
                  f'{path} in directory {ckpt_dir}; nothing was written '
                  'there, earlier checkpoints are intact') from e
  finally:
    for tmp in temps:
      _remove(tmp)
      with _lock:
        _in_flight.discard(tmp)
  _log.info('saved checkpoint %s', path)
  _clean_up(ckpt_dir, prefix, keep, path)


def _gather_collectives(state: Any) -> None:
  """On processes other than 0: join the gathers process 0 makes."""
  for leaf in jax.tree_util.tree_leaves(state):
    if isinstance(leaf, jax.Array) and not (leaf.is_fully_addressable or
                                            leaf.is_fully_replicated):
      to_numpy(leaf)


def _start(ckpt_dir: Any, target: Any, step: Any, prefix: str,
           keep: Optional[int], overwrite: bool):
  """(path, state) to write on process 0; (path, None) elsewhere."""
  if keep is not None and (not isinstance(keep, int) or keep < 0):
    raise ValueError(f'keep={keep!r}: pass how many checkpoints to keep (an '
                     'int; 0 or None keeps them all)')
  path = os.path.join(os.fspath(ckpt_dir), f'{prefix}{_step_str(step)}')
  state = to_state_dict(target)
  if jax.process_index() != 0:
    _gather_collectives(state)
    return path, None
  if os.path.lexists(path) and not overwrite:
    _prepare(path, overwrite)  # fails early, before writing anything
  return path, state


def save_checkpoint(ckpt_dir: str, target: Any, step: Any,
                    prefix: str = 'checkpoint_', keep: Optional[int] = 1,
                    overwrite: bool = False) -> str:
  """Saves `to_state_dict(target)` as `<ckpt_dir>/<prefix><step>`, safely.

  Arguments:
    ckpt_dir: the directory (created if needed).
    target: what to save (Model, Optimizer, dict of arrays, ...).
    step: the step, an int (it names the file).
    prefix: the file name prefix (default 'checkpoint_').
    keep: how many checkpoints to keep, the highest steps (default 1; 0 or
      None keeps all).
    overwrite: replace a valid checkpoint of this step (default False: an
      error). A corrupt or incomplete one is always replaced, with a
      warning, and kept as `<name>.corrupt`.
  Returns:
    The path. Only process 0 writes; the others return the same path at
    once (after joining gathers of arrays split across processes, so every
    process must call this). Before reading the file back in the same run,
    call `jax.experimental.multihost_utils.sync_global_devices` everywhere.
  Raises:
    ValueError: the checkpoint exists and `overwrite` is False.
    OSError: writing failed (e.g. ENOSPC); names the path and directory.
  """
  path, state = _start(ckpt_dir, target, step, prefix, keep, overwrite)
  if state is not None:
    _write_atomically(state, path, prefix, keep, overwrite)
  return path


def _read_newest(ckpt_dir: str, prefix: str):
  found, failures = _list(ckpt_dir, prefix), []
  for _, path in reversed(found):
    try:
      state = _read(path)
    except CorruptCheckpointError as e:
      failures.append(e)
      continue
    if failures:
      warnings.warn('skipped corrupt or incomplete checkpoint(s): ' + '; '.join(
          f'{e.path} ({e.reason})' for e in failures) + f'. Restored the '
                    f'newest intact one, {path}.', stacklevel=3)
    return path, state
  if failures:
    raise CorruptCheckpointError(ckpt_dir, f'all {len(found)} checkpoints with '
                                 f'prefix "{prefix}" are corrupt: ' + '; '.join(
                                     f'{e.path} ({e.reason})' for e in failures))
  return None, None


def restore_checkpoint(ckpt_dir: str, target: Any, step: Any = None,
                       prefix: str = 'checkpoint_', *, strict: bool = True,
                       must_exist: bool = False) -> Any:
  """Restores `target` from the checkpoint of `step` (default: the newest).

  Arguments:
    ckpt_dir: the directory, or the path of one checkpoint file.
    target: gives the structure, shapes and dtypes (None: the raw state).
    step: the step (`step=0` restores step 0); None takes the newest intact
      checkpoint, skipping corrupt or incomplete newer ones with a warning.
    prefix: the file name prefix (default 'checkpoint_').
    strict: see `from_state_dict` (default True: any difference raises one
      error listing them all; False returns `(restored, skipped)`).
    must_exist: raise if there is nothing to restore (default False: with
      `step=None`, return `target`; a missing directory logs a warning).
  Raises:
    ValueError: no checkpoint for the given `step`.
    FileNotFoundError: (`must_exist`) no directory or no checkpoint.
    CorruptCheckpointError: the checkpoint (`step=None`: every one) is
      damaged or incomplete; the message names the file.
    RestoreError: (strict) the checkpoint does not match `target`.
  """
  ckpt_dir = os.fspath(ckpt_dir)
  if os.path.isfile(ckpt_dir):
    path, state = ckpt_dir, _read(ckpt_dir)
  elif step is not None:
    path = os.path.join(ckpt_dir, f'{prefix}{_step_str(step)}')
    if not os.path.isfile(path):
      found = [os.path.basename(p) for _, p in _list(ckpt_dir, prefix)]
      raise ValueError(f'no checkpoint for step {_step_str(step)}: {path} does '
                       f'not exist (found: {found or "none"})')
    state = _read(path)
  else:
    path, state = _read_newest(ckpt_dir, prefix)
    if path is None:
      missing = not os.path.isdir(ckpt_dir)
      what = (f'checkpoint directory {ckpt_dir} does not exist' if missing
              else f'no checkpoint with prefix "{prefix}" in {ckpt_dir}')
      if must_exist:
        raise FileNotFoundError(what)
      (_log.warning if missing else _log.info)(
          '%s: nothing restored, the target is returned unchanged%s', what,
          ' (pass must_exist=True to make this an error)' if missing else '')
      return target if strict else (target, [])
  _log.info('restoring checkpoint %s', path)
  try:
    return from_state_dict(target, state, strict=strict)
  except RestoreError as e:
    raise RestoreError(e.problems, source=path) from None


_pending = set()  # AsyncCheckpointers with a save not yet waited for


@atexit.register
def _wait_at_exit() -> None:
  """Waits for pending saves; a failed one makes the exit status 1."""
  failed = False
  for checkpointer in list(_pending):
    try:
      checkpointer.wait()
    except BaseException as e:  # pylint: disable=broad-except
      failed = True
      _log.error('%s; exiting with status 1', ' '.join(
          [str(e)] + getattr(e, '__notes__', [])))
  if failed:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
      stream.flush()
    os._exit(1)  # pylint: disable=protected-access


class AsyncCheckpointer:
  """Saves checkpoints on a background thread.

      checkpointer = checkpoints.AsyncCheckpointer()
      for step in range(num_steps):
        optimizer = train_step(optimizer, batch)
        checkpointer.save(ckpt_dir, optimizer, step, keep=3)
      checkpointer.close()  # waits for the last save

  `save` takes `save_checkpoint`'s arguments and returns once the arrays
  are copied to host memory; it first waits for the previous save. A failed
  background save is logged at once and raised by the next `save`, `wait`
  or `close`; if none comes, the process waits for it at exit, logs it and
  exits with status 1. Also a context manager.
  """

  def __init__(self):
    self._thread: Optional[threading.Thread] = None
    self._error: Optional[BaseException] = None
    self._closed = False

  def save(self, ckpt_dir: str, target: Any, step: Any,
           prefix: str = 'checkpoint_', keep: Optional[int] = 1,
           overwrite: bool = False) -> str:
    """Starts saving `target`; returns the checkpoint's path."""
    if self._closed:
      raise ValueError('this AsyncCheckpointer is closed; create a new one')
    self.wait()
    path, state = _start(ckpt_dir, target, step, prefix, keep, overwrite)
    if state is not None:
      state = jax.tree_util.tree_map(
          lambda x: np.array(to_numpy(x)) if isinstance(
              x, (np.ndarray, jax.Array)) else x, state)
      self._thread = threading.Thread(
          target=self._run, args=(state, path, prefix, keep, overwrite),
          name=f'flaxish-save-{os.path.basename(path)}')
      _pending.add(self)
      self._thread.start()
    return path

  def _run(self, state, path, prefix, keep, overwrite) -> None:
    try:
      _write_atomically(state, path, prefix, keep, overwrite)
    except BaseException as e:  # pylint: disable=broad-except
      e.add_note(f'(raised by the background save of checkpoint {path})')
      _log.error('the background save of checkpoint %s failed: %s', path, e)
      self._error = e

  def wait(self) -> None:
    """Waits for the save in flight; raises its error if it failed."""
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    _pending.discard(self)
    error, self._error = self._error, None
    if error is not None:
      raise error

  def close(self) -> None:
    """Waits for the save in flight; then no more saves are accepted."""
    try:
      self.wait()
    finally:
      self._closed = True

  def __enter__(self) -> 'AsyncCheckpointer':
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    try:
      self.close()
    except BaseException:  # pylint: disable=broad-except
      if exc_type is None:
        raise  # otherwise the error that ended the block is more important
