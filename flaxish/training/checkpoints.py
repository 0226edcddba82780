"""Checkpoints that survive crashes: save, restore, keep the newest N.

    path = checkpoints.save_checkpoint(ckpt_dir, optimizer, step, keep=3)
    optimizer = checkpoints.restore_checkpoint(ckpt_dir, optimizer)

A checkpoint is exactly `<ckpt_dir>/<prefix><step>` (`step` an int), plain
msgpack as `to_bytes` writes it, plus its sidecar `<prefix><step>.meta`: a
JSON line with the format version, the data's size and CRC-32, `replaces`
(the digest of the file an overwrite replaces) and its own CRC-32. Both are
written to temp files `.<name>.<host>.<pid>.<random>.tmp`, fsynced and
renamed into place, sidecar first: a crash leaves every earlier checkpoint
intact. A data file without a sidecar (2020 flax) restores unverified. Temp
files of dead writers are removed later. Only process 0 writes.
"""
import atexit
import contextlib
import json
import logging
import os
import re
import socket
import struct
import sys
import threading
import time
import warnings
import zlib
from typing import Any, List, Optional, Sequence, Tuple

import jax
import numpy as np

from flaxish.serialization.msgpack import (CorruptCheckpointError,
                                           UnsupportedCheckpointError,
                                           msgpack_restore, read_checkpoint,
                                           to_numpy, write_checkpoint)
from flaxish.serialization.state_dict import (RestoreError, from_state_dict,
                                              to_state_dict)

__all__ = ['save_checkpoint', 'restore_checkpoint', 'latest_checkpoint',
           'natural_sort', 'AsyncCheckpointer', 'CorruptCheckpointError',
           'SIGNED_FLOAT_RE', 'UNSIGNED_FLOAT_RE', 'STALE_TEMP_SECONDS']

# Int or float substrings (2020 names), with the sign or without it.
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


def natural_sort(file_list: Sequence[str], signed: bool = True) -> List[str]:
  """Sorts names with numbers (`1.5e3`; a sign only if `signed`) compared as
  numbers: 'ckpt_9' < 'ckpt_10', 'file_-0.2' < 'file_0.1'."""
  regex = SIGNED_FLOAT_RE if signed else UNSIGNED_FLOAT_RE
  # Text and numbers alternate, so equal positions always hold equal types.
  return sorted(file_list, key=lambda name: [
      float(p) if i % 2 else p for i, p in enumerate(regex.split(name))])


def _step_str(step: Any) -> str:
  if isinstance(step, (np.ndarray, np.generic, jax.Array, float)):
    step = np.asarray(step).item()
    step = int(step) if isinstance(step, float) and step.is_integer() else step
  if isinstance(step, int) and not isinstance(step, bool):
    return str(step)
  raise ValueError(f'step={step!r}: a checkpoint is named <prefix><integer '
                   'step>; pass an int')


def _list(ckpt_dir: str, prefix: str) -> List[Tuple[int, str]]:
  """(step, path) of every checkpoint with `prefix`, lowest step first."""
  names = os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []
  name_re = re.compile(re.escape(prefix) + r'(-?(?:0|[1-9][0-9]*))')
  found = [(int(m.group(1)), os.path.join(ckpt_dir, n)) for n in names
           for m in [name_re.fullmatch(n)] if m]
  return sorted((s, p) for s, p in found if os.path.isfile(p))


def latest_checkpoint(ckpt_dir: str,
                      prefix: str = 'checkpoint_') -> Optional[str]:
  """The highest-step checkpoint's path in `ckpt_dir` (by name), or None."""
  found = _list(os.fspath(ckpt_dir), prefix)
  return found[-1][1] if found else None


def _read_meta(path: str) -> Optional[dict]:
  """The sidecar of `path`; None if there is none."""
  # pylint: disable=unidiomatic-typecheck
  try:
    with open(path + META_SUFFIX, 'rb') as f:
      raw = f.read(4096)
  except FileNotFoundError:
    return None
  try:
    meta = json.loads(raw)
    ok = raw == _meta_bytes(meta) and meta['format'] == _FORMAT
  except (ValueError, KeyError, TypeError, AttributeError):
    ok = False
  if ok and (version := meta['format_version']) > FORMAT_VERSION:
    raise UnsupportedCheckpointError(
        f'checkpoint {path} has format version {version}; this flaxish '
        f'reads versions up to {FORMAT_VERSION}: upgrade flaxish')
  if not ok or len(meta) != 6 or not all(type(v) is int for v in (
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
  """Format version 1: a header, the msgpack body, a footer with CRC-32s."""
  with open(path, 'rb') as f:
    data = f.read()
  body, footer = data[16:-24], data[-24:].rjust(24, b'\0')
  if struct.unpack('<8sQII', footer) != (b'FLXCKEND', len(body), zlib.crc32(
      body), zlib.crc32(footer[:20], zlib.crc32(data[:16]))):
    raise CorruptCheckpointError(path, 'truncated or damaged (version 1)')
  return msgpack_restore(body)


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
  return read_checkpoint(path, [(meta['size'], meta['crc32']),
                                meta['replaces'] or (-1, -1)])


def _fsync_dir(path: str) -> None:
  if os.name == 'posix':  # makes the renames durable
    fd = os.open(path, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


def _is_dead(name: str, path: str) -> bool:
  m = _TEMP_RE.fullmatch(name)  # a temp file of no running save?
  if m and m.group(1) == _HOST and os.name == 'posix':
    pid = int(m.group(2))
    if pid == os.getpid():
      return path not in _in_flight
    try:
      os.kill(pid, 0)  # signal 0: only asks whether it exists
    except ProcessLookupError:
      return True
    except PermissionError:
      return False
  try:
    return time.time() - os.stat(path).st_mtime > STALE_TEMP_SECONDS
  except OSError:
    return False


def _clean_up(ckpt_dir: str, prefix: str, keep: int, saved: str) -> None:
  """Removes dead temp files, then all but the `keep` highest steps."""
  for name in os.listdir(ckpt_dir):
    if name.startswith('.' + prefix) and name.endswith('.tmp') and _is_dead(
        name, os.path.join(ckpt_dir, name)):
      _remove(os.path.join(ckpt_dir, name))
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
  except OSError as e:
    if not isinstance(e, FileNotFoundError):
      _log.warning('could not remove %s: %s', path, e)


def _prepare(path: str, overwrite: bool) -> Optional[List[int]]:
  """Checks the step's name; returns the `replaces` entry of the sidecar."""
  if not os.path.lexists(path):
    return None
  if overwrite:  # the sidecar also accepts the old data until the rename
    with contextlib.suppress(ValueError, TypeError):  # none, or damaged
      return [(meta := _read_meta(path))['size'], meta['crc32']]
    return None
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
                     f'{_HOST}.{os.getpid()}.{os.urandom(6).hex()}.tmp')
  temps.append(tmp)
  _in_flight.add(tmp)  # (set operations are atomic)
  with open(tmp, 'xb') as f:
    result = write(f)
    f.flush()
    os.fsync(f.fileno())  # the data is on disk before any rename
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
                  f'{path} in directory {ckpt_dir}; no temp file is left, '
                  'earlier checkpoints are intact') from e
  finally:
    for tmp in temps:
      _remove(tmp)
      _in_flight.discard(tmp)
  _log.info('saved checkpoint %s', path)
  _clean_up(ckpt_dir, prefix, keep, path)


def _map_arrays(fn: Any, x: Any) -> Any:
  """`x` with `fn` applied to its arrays in the order in which
  `write_checkpoint` writes and gathers them (dict order, not `tree_map`'s
  sorted one: gathers are collectives, every process must match)."""
  # pylint: disable=unidiomatic-typecheck
  if type(x) is dict:
    return {k: _map_arrays(fn, v) for k, v in x.items()}
  if type(x) in (list, tuple):
    return type(x)(_map_arrays(fn, v) for v in x)
  return fn(x) if isinstance(x, (np.ndarray, jax.Array)) else x


def _start(ckpt_dir: Any, target: Any, step: Any, prefix: str,
           keep: Optional[int], overwrite: bool):
  """(path, state) to write on process 0; (path, None) elsewhere."""
  if keep is not None and (not isinstance(keep, int) or keep < 0):
    raise ValueError(f'keep={keep!r}: pass how many checkpoints to keep (an '
                     'int; 0 or None keeps them all)')
  path = os.path.join(os.fspath(ckpt_dir), f'{prefix}{_step_str(step)}')
  state = to_state_dict(target)
  if jax.process_index() != 0:  # join the gathers that process 0 makes
    def join_gather(x):
      if isinstance(x, jax.Array) and not x.is_fully_replicated:
        to_numpy(x)
      return x
    _map_arrays(join_gather, state)
    return path, None
  if not overwrite:
    _prepare(path, overwrite)  # fails early, before writing anything
  return path, state


def save_checkpoint(ckpt_dir: str, target: Any, step: Any,
                    prefix: str = 'checkpoint_', keep: Optional[int] = 1,
                    overwrite: bool = False) -> str:
  """Saves `to_state_dict(target)` as `<ckpt_dir>/<prefix><step>`, safely.

  Arguments:
    ckpt_dir: the directory (created if needed).
    target: what to save (Model, Optimizer, dict of arrays, ...).
    step: the step, an int.
    prefix: the file name prefix (default 'checkpoint_').
    keep: how many of the highest steps to keep (default 1; 0 or None: all).
    overwrite: replace a valid checkpoint of this step (default False: an
      error); a corrupt or incomplete one is replaced with a warning and
      kept as `<name>.corrupt`.
  Returns the path. Every process must call this (split arrays are
  gathered); only process 0 writes. Raises ValueError if the checkpoint
  exists, OSError (naming the path and the directory) if writing failed.
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
      warnings.warn(f'skipped corrupt or incomplete checkpoint(s): '
                    f'{_reasons(failures)}. Restored the newest intact one, '
                    f'{path}.', stacklevel=3)
    return path, state
  if failures:
    raise CorruptCheckpointError(ckpt_dir, f'all {len(found)} checkpoints with '
                                 f'prefix "{prefix}" are corrupt: '
                                 f'{_reasons(failures)}')
  return None, None


def _reasons(failures: List[CorruptCheckpointError]) -> str:
  return '; '.join(f'{e.path} ({e.reason})' for e in failures)


def restore_checkpoint(ckpt_dir: str, target: Any, step: Any = None,
                       prefix: str = 'checkpoint_', *, strict: bool = True,
                       must_exist: bool = False) -> Any:
  """Restores `target` from the checkpoint of `step` (default: the newest).

  Arguments:
    ckpt_dir: the directory, or the path of one checkpoint file.
    target: gives the structure, shapes and dtypes (None: the raw state).
    step: the step (`step=0` restores step 0); None: the newest intact one,
      skipping corrupt or incomplete newer ones with a warning.
    prefix: the file name prefix (default 'checkpoint_').
    strict: see `from_state_dict` (default True).
    must_exist: raise FileNotFoundError if there is nothing to restore
      (default False: with `step=None`, return `target`; a missing directory
      logs a warning).
  Raises ValueError (no checkpoint for `step`), CorruptCheckpointError (the
  checkpoint, or with `step=None` every one, is damaged; names the file),
  RestoreError (strict: it does not match `target`).
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
      _log.error('%s; exiting with status 1', ' '.join([str(e), *e.__notes__]))
  if failed:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access


class AsyncCheckpointer:
  """Saves checkpoints on a background thread; also a context manager.

  `save` takes `save_checkpoint`'s arguments, waits for the previous save
  and returns once the arrays are copied to the host. A failed save is logged
  and raised by the next `save`, `wait` or `close` (`close` waits for the
  last save); if none comes, the process exits with status 1.
  """

  def __init__(self):
    self._thread, self._error, self._closed = None, None, False

  def save(self, ckpt_dir: str, target: Any, step: Any,
           prefix: str = 'checkpoint_', keep: Optional[int] = 1,
           overwrite: bool = False) -> str:
    """Starts saving `target`; returns the checkpoint's path."""
    if self._closed:
      raise ValueError('this AsyncCheckpointer is closed; create a new one')
    self.wait()
    path, state = _start(ckpt_dir, target, step, prefix, keep, overwrite)
    if state is not None:
      state = _map_arrays(lambda x: np.array(to_numpy(x)), state)
      self._thread = threading.Thread(
          target=self._run, args=(state, path, prefix, keep, overwrite))
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
