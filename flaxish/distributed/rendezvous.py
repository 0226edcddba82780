"""A pre-flight check before `jax.distributed.initialize`: who is there.

Process 0 listens on the coordinator port (before JAX takes it); the others
connect, send their id and `num_processes` and wait for process 0's answer,
logging what they wait for every `PROGRESS_SECONDS`.
"""
import contextlib
import json
import logging
import socket
import time

__all__ = ['InitializationError', 'rendezvous', 'PROGRESS_SECONDS']

PROGRESS_SECONDS = 10.0
_log = logging.getLogger('flaxish.distributed')


class InitializationError(RuntimeError):
  """The processes of a multi-process run did not all start together."""


def _send(conn: socket.socket, message: dict) -> None:
  with contextlib.suppress(OSError):  # if gone, the other side raises
    conn.sendall(json.dumps(message).encode() + b'\n')


def _receive(conn: socket.socket) -> dict:
  data = b''  # one JSON line
  while not data.endswith(b'\n'):
    chunk = conn.recv(4096)
    if not chunk:
      raise ConnectionError('the connection was closed')
    data += chunk
  return json.loads(data)


def _serve(address: str, port: int, n: int, deadline: float) -> str:
  """Process 0: the problem, or '' once all `n` processes joined."""
  dual = socket.has_dualstack_ipv6()  # IPv4 and IPv6 addresses
  try:
    server = socket.create_server(('', port), dualstack_ipv6=dual, family=(
        socket.AF_INET6 if dual else socket.AF_INET))
  except OSError as e:
    return (f'cannot listen on port {port} of the coordinator address '
            f'{address}: {e}. Is another run using the port?')
  server.settimeout(0.2)
  joined, problem, next_log = {}, '', 0.0
  with server:
    while len(joined) < n - 1 and not problem:
      missing = [i for i in range(1, n) if i not in joined]
      if time.monotonic() >= next_log:
        (_log.warning if next_log else _log.info)(
            'flaxish.distributed: process 0 waits at %s: %d of %d processes '
            'joined (missing: %s)', address, len(joined) + 1, n, missing)
        next_log = time.monotonic() + PROGRESS_SECONDS
      if time.monotonic() > deadline:
        problem = (f'timed out at {address}: {len(joined) + 1} of {n} '
                   f'processes joined; process(es) {missing} never connected')
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
        problem = f'process id {pid} is taken or not in [1, {n})'
      if problem:
        with conn:
          _send(conn, {'error': problem})
      else:
        joined[pid] = conn
    for conn in joined.values():
      _send(conn, {'error': problem} if problem else {'ok': True})
    for conn in joined.values():
      with conn, contextlib.suppress(OSError):
        conn.recv(1)  # they close first, so the port is free for JAX
  return problem


def _join(address: str, n: int, pid: int, deadline: float) -> str:
  """Another process: the problem, or '' once process 0 says go."""
  host, port = address.rsplit(':', 1)
  what, reason, conn, next_log = (f'the coordinator at {address} (process 0)',
                                  'no answer yet', None, 0.0)
  while conn is None:
    if time.monotonic() >= next_log:
      (_log.warning if next_log else _log.info)(
          'flaxish.distributed: process %d of %d waits for %s: %s', pid, n,
          what, reason)
      next_log = time.monotonic() + PROGRESS_SECONDS
    if time.monotonic() > deadline:
      return (f'cannot reach {what}: {reason}. Check that process 0 runs, '
              'and the address and port (open in firewalls)')
    try:
      conn = socket.create_connection((host.strip('[]'), int(port)), 5.0)
    except OSError as e:
      reason = str(e) or type(e).__name__
      time.sleep(0.5)
  with conn:
    _send(conn, {'process_id': pid, 'num_processes': n})
    while time.monotonic() < deadline:
      conn.settimeout(max(0.1, min(PROGRESS_SECONDS,
                                   deadline - time.monotonic())))
      try:
        return _receive(conn).get('error', '')
      except socket.timeout:
        _log.warning('flaxish.distributed: process %d of %d is connected to '
                     '%s and waits for the other processes', pid, n, what)
      except (OSError, ValueError) as e:
        return f'{what} closed the connection ({e})'
  return f'not all {n} processes joined {what}'


def rendezvous(address: str, num_processes: int, process_id: int,
               timeout: float) -> None:
  """Returns once all `num_processes` (> 1) processes reached this call, or
  raises `InitializationError` naming the address, this process and what is
  missing (after `timeout` seconds) or what they disagree on."""
  deadline = time.monotonic() + timeout
  if process_id == 0:
    problem = _serve(address, int(address.rsplit(':', 1)[1]), num_processes,
                     deadline)
  else:
    problem = _join(address, num_processes, process_id, deadline)
  if problem:
    raise InitializationError(
        f'flaxish.distributed.initialize (process {process_id} of '
        f'{num_processes}, coordinator {address}, timeout {timeout:g} s): '
        f'{problem}')
