"""A pre-flight check before `jax.distributed.initialize`: who is there.

Process 0 listens on the coordinator port (before JAX's coordination service
takes it over); every other process connects, says its id and
`num_processes`, and waits for process 0's answer. Both sides log what they
wait for every `PROGRESS_SECONDS` (the address, how many processes joined of
how many), and after the timeout raise `InitializationError` naming the
address, the process and what is missing. Process 0 refuses a process with
another `num_processes` or a taken id, and both sides raise.
"""
import json
import logging
import socket
import time
from typing import Dict

__all__ = ['InitializationError', 'rendezvous', 'PROGRESS_SECONDS']

PROGRESS_SECONDS = 10.0
_log = logging.getLogger('flaxish.distributed')


class InitializationError(RuntimeError):
  """The processes of a multi-process run did not all start together."""


def _send(conn: socket.socket, message: dict) -> None:
  try:
    conn.sendall(json.dumps(message).encode() + b'\n')
  except OSError:
    pass  # the other side is gone; it has its own error


def _receive(conn: socket.socket) -> dict:
  """One JSON line; raises OSError (socket.timeout included) or ValueError."""
  data = b''
  while not data.endswith(b'\n'):
    chunk = conn.recv(4096)
    if not chunk:
      raise ConnectionError('the connection was closed')
    data += chunk
  return json.loads(data)


def _progress(next_log: float, *args) -> float:
  now = time.monotonic()
  if now >= next_log:
    (_log.info if next_log == 0 else _log.warning)(*args)
    return now + PROGRESS_SECONDS
  return next_log


def _serve(address: str, port: int, n: int, deadline: float,
           timeout: float) -> None:
  try:
    dual = socket.has_dualstack_ipv6()  # IPv4 and IPv6 addresses
    server = socket.create_server(('', port), dualstack_ipv6=dual,
                                  family=socket.AF_INET6 if dual else
                                  socket.AF_INET)
  except OSError as e:
    raise InitializationError(
        f'process 0 cannot listen on port {port} of the coordinator address '
        f'{address}: {e}. Is another run using the port?') from None
  server.settimeout(0.2)
  joined: Dict[int, socket.socket] = {}
  try:
    next_log, problem = 0.0, None
    while len(joined) < n - 1 and problem is None:
      missing = [i for i in range(1, n) if i not in joined]
      next_log = _progress(
          next_log, 'flaxish.distributed: process 0 waits at %s: %d of %d '
          'processes joined (missing: %s)', address, len(joined) + 1, n,
          missing)
      if time.monotonic() > deadline:
        problem = (f'timed out after {timeout:g} s at {address}: '
                   f'{len(joined) + 1} of {n} processes joined; process(es) '
                   f'{missing} never connected')
        break
      try:
        conn, _ = server.accept()
        conn.settimeout(5.0)
        hello = _receive(conn)
        theirs, pid = hello['num_processes'], hello['process_id']
      except (OSError, ValueError, KeyError, TypeError):
        continue  # not one of ours (a port scan?), or it went away
      if theirs != n:
        problem = (f'process {pid} was started with num_processes={theirs}, '
                   f'process 0 with num_processes={n}; start every process '
                   'with the same count')
      elif pid in joined or not 0 < pid < n:
        problem = (f'a second process claims process id {pid}' if pid in
                   joined else f'process id {pid} is not in [1, {n})')
      if problem:
        _send(conn, {'error': problem})
        conn.close()
      else:
        joined[pid] = conn
    for conn in joined.values():
      _send(conn, {'error': problem} if problem else {'ok': True})
    for conn in joined.values():  # they close first: the port stays free
      try:
        conn.recv(1)
      except OSError:
        pass
  finally:
    for conn in joined.values():
      conn.close()
    server.close()
  if problem:
    raise InitializationError(f'flaxish.distributed.initialize (process 0): '
                              f'{problem}')


def _join(address: str, host: str, port: int, n: int, pid: int,
          deadline: float, timeout: float) -> None:
  next_log, reason, conn = 0.0, 'no answer yet', None
  what = f'the coordinator at {address} (process 0)'
  while conn is None:
    next_log = _progress(next_log, 'flaxish.distributed: process %d of %d '
                         'waits for %s: %s', pid, n, what, reason)
    if time.monotonic() > deadline:
      raise InitializationError(
          f'flaxish.distributed.initialize (process {pid} of {n}): timed out '
          f'after {timeout:g} s: cannot reach {what}: {reason}. Check that '
          'process 0 runs, and the address and port (open in firewalls)')
    try:
      conn = socket.create_connection((host, port), timeout=5.0)
    except OSError as e:
      reason = str(e) or type(e).__name__
      time.sleep(0.5)
  with conn:
    _send(conn, {'process_id': pid, 'num_processes': n})
    while True:
      conn.settimeout(max(0.1, min(PROGRESS_SECONDS, deadline -
                                   time.monotonic())))
      try:
        answer = _receive(conn)
        break
      except socket.timeout:
        _log.warning('flaxish.distributed: process %d of %d is connected to '
                     '%s and waits for the other processes', pid, n, what)
      except (OSError, ValueError) as e:
        answer = {'error': f'the coordinator closed the connection ({e})'}
        break
      if time.monotonic() > deadline:
        answer = {'error': f'not all {n} processes joined within '
                           f'{timeout:g} s'}
        break
  if 'error' in answer:
    raise InitializationError(
        f'flaxish.distributed.initialize (process {pid} of {n}, coordinator '
        f'{address}): {answer["error"]}')


def rendezvous(address: str, num_processes: int, process_id: int,
               timeout: float) -> None:
  """Returns once all `num_processes` processes reached this call.

  Arguments:
    address: the coordinator's `HOST:PORT` (process 0 listens on PORT).
    num_processes: how many processes (> 1).
    process_id: this process's index.
    timeout: seconds to wait for the others.
  Raises:
    InitializationError: a timeout or a disagreement; the message names the
      address, the process and what is missing.
  """
  host, port = address.rsplit(':', 1)
  deadline = time.monotonic() + timeout
  if process_id == 0:
    _serve(address, int(port), num_processes, deadline, timeout)
  else:
    _join(address, host.strip('[]'), int(port), num_processes, process_id,
          deadline, timeout)
