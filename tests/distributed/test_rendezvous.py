"""The pre-flight check of `initialize`, in one process: each "process" is
a thread, on a free port of 127.0.0.1."""
import concurrent.futures
import socket
import threading

import pytest

from flaxish.distributed import rendezvous
from tests.distributed import _launch


def _address():
  return f'127.0.0.1:{_launch.free_port()}'


def _together(address, ids, n, timeout=10):
  """Runs `rendezvous` for each id in `ids` (process 0 first) in threads;
  returns each one's error message, or None where it returned."""

  def one(pid):
    try:
      rendezvous.rendezvous(address, n, pid, timeout)
    except rendezvous.InitializationError as e:
      return str(e)
    return None

  with concurrent.futures.ThreadPoolExecutor(len(ids)) as pool:
    return list(pool.map(one, ids))


def test_all_processes_join():
  assert _together(_address(), [0, 1, 2], 3) == [None, None, None]


def test_a_process_id_used_twice_is_refused_on_every_side():
  address = _address()
  errors = _together(address, [0, 1, 1], 3)
  for pid, error in zip([0, 1, 1], errors):
    assert error == (f'flaxish.distributed.initialize (process {pid} of 3, '
                     f'coordinator {address}, timeout 10 s): process id 1 is '
                     'taken or not in [1, 3)'), errors


def test_a_busy_port_is_named():
  address = _address()
  port = int(address.rsplit(':', 1)[1])
  with socket.create_server(('', port)):
    with pytest.raises(rendezvous.InitializationError,
                       match=f'cannot listen on port {port} of the '
                       f'coordinator address {address}: .*Is another run '
                       'using the port'):
      rendezvous.rendezvous(address, 2, 0, 5)


def _fake_coordinator(answer):
  """A listening socket on a free port whose one connection `answer(conn)`
  handles; returns the address and the serving thread."""
  server = socket.create_server(('127.0.0.1', 0))
  address = f'127.0.0.1:{server.getsockname()[1]}'

  def serve():
    with server:
      conn, _ = server.accept()
      with conn:
        rendezvous._receive(conn)  # pylint: disable=protected-access
        answer(conn)

  thread = threading.Thread(target=serve, daemon=True)
  thread.start()
  return address, thread


def test_a_coordinator_that_hangs_up_is_named():
  address, thread = _fake_coordinator(lambda conn: None)
  with pytest.raises(rendezvous.InitializationError,
                     match=rf'\(process 1 of 2, coordinator {address}, '
                     rf'timeout 5 s\): the coordinator at {address} \(process '
                     r'0\) closed the connection \(the connection was '
                     r'closed\)'):
    rendezvous.rendezvous(address, 2, 1, 5)
  thread.join()


def test_a_coordinator_that_never_answers_times_out():
  done = threading.Event()
  address, thread = _fake_coordinator(lambda conn: done.wait(10))
  with pytest.raises(rendezvous.InitializationError,
                     match=rf'\(process 1 of 2, coordinator {address}, '
                     rf'timeout 1 s\): not all 2 processes joined the '
                     rf'coordinator at {address} \(process 0\)$'):
    rendezvous.rendezvous(address, 2, 1, 1)
  done.set()
  thread.join()
