"""Checkpoints that survive crashes: save, restore, keep the newest N.

    path = checkpoints.save_checkpoint(ckpt_dir, optimizer, step, keep=3)
    optimizer = checkpoints.restore_checkpoint(ckpt_dir, optimizer)

A checkpoint is the file `<ckpt_dir>/<prefix><step>` holding `to_state_dict`
of the target in the checkpoint-file format (`serialization.checkpoint_file`:
the 2020 msgpack state dict framed with a format version and CRC-32s).

Saving writes a hidden temp file leaf by leaf (memory added: one array's host
copy at most), flushes and fsyncs it, renames it atomically onto the final
name and fsyncs the directory: a crash at any moment leaves either the
complete new checkpoint or none, never a partial file under a checkpoint
name. Then the `keep` rule of 2020 applies: of the checkpoints with this
prefix, sorted by `natural_sort` on the step part of their names, the highest
`keep` survive (not the most recent: saving step 1 after step 2 with keep=1
deletes step 1 again, with a warning). With several processes only process
0 writes. Restoring verifies the checksums; `step=None` takes the newest
checkpoint and falls back, with a warning, to older ones that are intact.
Uses only the standard library for files (no TensorFlow).
"""
import logging
import os
import re
import threading
import uuid
import warnings
from typing import Any, List, Optional, Sequence

import jax
import numpy as np

from flaxish.serialization import host
from flaxish.serialization.checkpoint_file import (CorruptCheckpointError,
                                                   read_checkpoint,
                                                   write_checkpoint)
from flaxish.serialization.dtypes import check_dtype
from flaxish.serialization.matching import RestoreError
from flaxish.serialization.paths import display_path, join_path
from flaxish.serialization.state_dict import from_state_dict, to_state_dict

__all__ = ['save_checkpoint', 'restore_checkpoint', 'latest_checkpoint',
           'natural_sort', 'AsyncCheckpointer', 'CorruptCheckpointError']

_log = logging.getLogger(__name__)

_FLOAT = r'(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?'
_SIGNED_FLOAT_RE = re.compile(rf'([-+]?{_FLOAT})')
_UNSIGNED_FLOAT_RE = re.compile(rf'({_FLOAT})')

# Temp files being written by this process, protected from stale-file cleanup.
_in_flight = set()
_in_flight_lock = threading.Lock()


def _natural_key(name: str, signed: bool = True) -> List[Any]:
  parts = (_SIGNED_FLOAT_RE if signed else _UNSIGNED_FLOAT_RE).split(name)
  # Text and numbers alternate, so equal positions always hold equal types.
  return [float(p) if i % 2 else p for i, p in enumerate(parts)]


def natural_sort(file_list: Sequence[str], signed: bool = True) -> List[str]:
  """Sorts names with their numbers compared as numbers.

  'ckpt_9' < 'ckpt_10'; numbers may have a decimal point and an exponent
  ('1.5e3') and, with `signed`, a sign.
  """
  return sorted(file_list, key=lambda name: _natural_key(name, signed))


def _step_str(step: Any) -> str:
  if isinstance(step, (np.ndarray, np.generic, jax.Array)):
    step = np.asarray(step).item()
  return str(step)


def _checkpoint_path(ckpt_dir: str, prefix: str, step: Any) -> str:
  return os.path.join(ckpt_dir, f'{prefix}{_step_str(step)}')


def _is_temp(name: str, prefix: str) -> bool:
  return name.endswith('.tmp') or name == f'{prefix}tmp'


def _list_checkpoints(ckpt_dir: str, prefix: str) -> List[str]:
  """Paths of the checkpoints with `prefix`, oldest (lowest step) first."""
  try:
    names = os.listdir(ckpt_dir)
  except (FileNotFoundError, NotADirectoryError):
    return []
  names = [n for n in names if n.startswith(prefix) and not _is_temp(n, prefix)
           and os.path.isfile(os.path.join(ckpt_dir, n))]
  names.sort(key=lambda n: _natural_key(n[len(prefix):]))
  return [os.path.join(ckpt_dir, n) for n in names]


def latest_checkpoint(ckpt_dir: str,
                      prefix: str = 'checkpoint_') -> Optional[str]:
  """The path of the highest-step checkpoint in `ckpt_dir`, or None.

  Only looks at names; `restore_checkpoint` verifies the contents.
  """
  paths = _list_checkpoints(os.fspath(ckpt_dir), prefix)
  return paths[-1] if paths else None


def _check_keep(keep: Optional[int]) -> None:
  if keep is not None and (not isinstance(keep, int) or keep < 1):
    raise ValueError(f'keep={keep!r}: pass a positive int (how many '
                     'checkpoints to keep), or None to keep them all')


def _check_overwrite(path: str, overwrite: bool) -> None:
  if not overwrite and os.path.lexists(path):
    raise ValueError(f'checkpoint {path} already exists; pass overwrite=True '
                     'to replace it, or save under a new step')


def _fsync_dir(path: str) -> None:
  if os.name != 'posix':
    return
  fd = os.open(path, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _remove_stale_temps(ckpt_dir: str, prefix: str) -> None:
  """Removes temp files left by an earlier crash (not ones being written)."""
  with _in_flight_lock:
    busy = set(_in_flight)
  for name in os.listdir(ckpt_dir):
    path = os.path.join(ckpt_dir, name)
    if name.startswith(f'.{prefix}') and name.endswith('.tmp') and (
        path not in busy):
      try:
        os.remove(path)
      except OSError:
        pass


def _apply_keep(ckpt_dir: str, prefix: str, keep: Optional[int],
                saved: str) -> None:
  _remove_stale_temps(ckpt_dir, prefix)
  if keep is None:
    return
  paths = _list_checkpoints(ckpt_dir, prefix)
  for path in paths[:-keep]:
    try:
      os.remove(path)
    except FileNotFoundError:
      pass
    if path == saved:
      kept = ', '.join(os.path.basename(p) for p in paths[-keep:])
      warnings.warn(
          f'checkpoint {saved} was deleted right after saving: keep={keep} '
          f'keeps the highest steps, and higher ones exist in {ckpt_dir} '
          f'({kept})', stacklevel=4)


def _write_atomically(state: Any, path: str, prefix: str,
                      keep: Optional[int], overwrite: bool) -> None:
  ckpt_dir = os.path.dirname(path) or '.'
  os.makedirs(ckpt_dir, exist_ok=True)
  tmp = os.path.join(
      ckpt_dir, f'.{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp')
  with _in_flight_lock:
    _in_flight.add(tmp)
  try:
    with open(tmp, 'xb', buffering=0) as f:
      write_checkpoint(f, state)
      os.fsync(f.fileno())
    _check_overwrite(path, overwrite)
    os.replace(tmp, path)
  except BaseException:
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise
  finally:
    with _in_flight_lock:
      _in_flight.discard(tmp)
  _fsync_dir(ckpt_dir)
  _log.info('saved checkpoint %s', path)
  _apply_keep(ckpt_dir, prefix, keep, path)


def _gather_collectives(state: Any) -> None:
  """On processes other than 0: join the gathers process 0 makes."""
  if type(state) is dict:  # pylint: disable=unidiomatic-typecheck
    for value in state.values():
      _gather_collectives(value)
  elif type(state) in (list, tuple):  # pylint: disable=unidiomatic-typecheck
    for value in state:
      _gather_collectives(value)
  elif isinstance(state, jax.Array) and not (
      state.is_fully_addressable or state.is_fully_replicated):
    host.to_numpy(state)


def _check_leaves(state: Any, path: str = '') -> None:
  """Fails early (before the background write) on leaves that cannot go."""
  if type(state) is dict:  # pylint: disable=unidiomatic-typecheck
    for key, value in state.items():
      _check_leaves(value, join_path(path, key))
  elif type(state) in (list, tuple):  # pylint: disable=unidiomatic-typecheck
    for i, value in enumerate(state):
      _check_leaves(value, join_path(path, i))
  elif host.is_array(state):
    if not host.is_key_array(state):
      check_dtype(np.dtype(state.dtype), display_path(path))
  elif not isinstance(state, (str, bytes, bool, int, float, complex,
                              type(None))):
    raise TypeError(
        f'cannot save the {type(state).__name__} at {display_path(path)}: '
        'register its class with register_serialization_state, or make it a '
        'struct.dataclass')


def save_checkpoint(ckpt_dir: str, target: Any, step: Any,
                    prefix: str = 'checkpoint_', keep: Optional[int] = 1,
                    overwrite: bool = False) -> str:
  """Saves `to_state_dict(target)` as `<ckpt_dir>/<prefix><step>`, safely.

  Arguments:
    ckpt_dir: the directory (created if needed).
    target: what to save (Model, Optimizer, dict of arrays, ...).
    step: the step, int or float (it names the file).
    prefix: the file name prefix (default 'checkpoint_').
    keep: how many checkpoints to keep, the highest `natural_sort`ed steps
      (default 1; None keeps all).
    overwrite: replace an existing checkpoint of this step (default False:
      an error).
  Returns:
    The path of the checkpoint. Only process 0 writes; other processes
    return the same path (and join gathers of arrays sharded across
    processes, so then every process must call this). They return without
    waiting for process 0's write: to read the file back in the same run,
    first call `jax.experimental.multihost_utils.sync_global_devices(name)`
    on every process.
  Raises:
    ValueError: the checkpoint exists and `overwrite` is False.
  """
  _check_keep(keep)
  path = _checkpoint_path(os.fspath(ckpt_dir), prefix, step)
  state = to_state_dict(target)
  if jax.process_index() != 0:
    _gather_collectives(state)
    return path
  _check_overwrite(path, overwrite)
  _write_atomically(state, path, prefix, keep, overwrite)
  return path


def _read_newest_valid(ckpt_dir: str, prefix: str):
  paths = _list_checkpoints(ckpt_dir, prefix)
  if not paths:
    return None, None
  failures = []
  for path in reversed(paths):
    try:
      state = read_checkpoint(path)
    except CorruptCheckpointError as e:
      failures.append(e)
      continue
    if failures:
      warnings.warn(
          'skipped corrupt checkpoint(s): ' +
          '; '.join(f'{e.path} ({e.reason})' for e in failures) +
          f'. Restored the newest intact one, {path}.', stacklevel=3)
    return path, state
  raise CorruptCheckpointError(
      ckpt_dir, f'all {len(paths)} checkpoints with prefix "{prefix}" are '
      'corrupt: ' + '; '.join(f'{e.path} ({e.reason})' for e in failures))


def restore_checkpoint(ckpt_dir: str, target: Any, step: Any = None,
                       prefix: str = 'checkpoint_', *,
                       strict: bool = True) -> Any:
  """Restores `target` from the checkpoint of `step` (default: the newest).

  Arguments:
    ckpt_dir: the directory, or the path of one checkpoint file.
    target: gives the structure, shapes and dtypes to restore into; None
      returns the raw state dict.
    step: the step to restore (`step=0` restores step 0); None takes the
      newest intact checkpoint, skipping corrupt newer ones with a warning.
    prefix: the file name prefix (default 'checkpoint_').
    strict: see `from_state_dict` (default True: any difference with the
      target raises one error listing them all; False returns
      `(restored, skipped)`).
  Returns:
    The restored target; `target` itself when `step` is None and there is no
    checkpoint.
  Raises:
    ValueError: no checkpoint for the given `step`.
    CorruptCheckpointError: the checkpoint (for `step=None`: every one) is
      truncated or damaged; the message names the file.
    RestoreError: (strict) the checkpoint does not match `target`.
  """
  ckpt_dir = os.fspath(ckpt_dir)
  if os.path.isfile(ckpt_dir):
    path = ckpt_dir
    state = read_checkpoint(path)
  elif step is not None:
    path = _checkpoint_path(ckpt_dir, prefix, step)
    if not os.path.isfile(path):
      found = [os.path.basename(p) for p in _list_checkpoints(ckpt_dir, prefix)]
      raise ValueError(f'no checkpoint for step {_step_str(step)}: {path} does '
                       f'not exist (found: {found or "none"})')
    state = read_checkpoint(path)
  else:
    path, state = _read_newest_valid(ckpt_dir, prefix)
    if path is None:
      _log.info('no checkpoint with prefix "%s" in %s', prefix, ckpt_dir)
      return target if strict else (target, [])
  _log.info('restoring checkpoint %s', path)
  try:
    return from_state_dict(target, state, strict=strict)
  except RestoreError as e:
    raise RestoreError(e.problems, source=path) from None


class AsyncCheckpointer:
  """Saves checkpoints on a background thread.

      checkpointer = checkpoints.AsyncCheckpointer()
      for step in range(num_steps):
        optimizer = train_step(optimizer, batch)
        checkpointer.save(ckpt_dir, optimizer, step, keep=3)
      checkpointer.close()  # waits for the last save

  `save` returns once the arrays are copied to host memory, and takes the
  same arguments as `save_checkpoint`. At most one save is in flight: `save`
  first waits for the previous one. An error of a background save is raised
  by the next call to `save`, `wait` or `close`. Also a context manager.
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
    _check_keep(keep)
    path = _checkpoint_path(os.fspath(ckpt_dir), prefix, step)
    state = to_state_dict(target)
    if jax.process_index() != 0:
      _gather_collectives(state)
      return path
    _check_overwrite(path, overwrite)
    _check_leaves(state)
    state = host.copy_leaves_to_host(state)
    self._thread = threading.Thread(
        target=self._run, args=(state, path, prefix, keep, overwrite),
        name=f'flaxish-save-{os.path.basename(path)}')
    self._thread.start()
    return path

  def _run(self, state, path, prefix, keep, overwrite) -> None:
    try:
      _write_atomically(state, path, prefix, keep, overwrite)
    except BaseException as e:  # pylint: disable=broad-except
      e.add_note(f'(raised by the background save of {path})')
      self._error = e

  def wait(self) -> None:
    """Waits for the save in flight; raises its error if it failed."""
    if self._thread is not None:
      self._thread.join()
      self._thread = None
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
