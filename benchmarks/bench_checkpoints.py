"""Checkpoint throughput and memory: flaxish vs np.save/np.load vs flax.

    python benchmarks/bench_checkpoints.py [--gb 1.0] [--repeats 3]
        [--dir DIR] [--markdown FILE]

Saves and restores a parameter tree of about `--gb` GB (a transformer-like
dict of float32 `jax.Array`s on the CPU; the largest array, the embedding, is
about an eighth of the total) with:

- `np.save` / `np.load`: one .npy file per array: the practical limit of this
  disk. Saved without and with `os.fsync` (a checkpoint that survives a
  crash must be fsynced, so "durable" is the fair baseline for saving).
- flaxish `save_checkpoint` / `restore_checkpoint` (always fsyncs, writes a
  checksum and verifies it on restore), and `AsyncCheckpointer.save` (the
  time until it returns; the write goes on in the background).
- flax's `serialization.to_bytes` / `from_bytes` with the file written and
  fsynced (only when flax is installed; otherwise that row is skipped).

Every measurement runs in a fresh process, `--repeats` times, interleaved;
the table gives the median. Throughput is tree bytes / seconds. "Extra
memory" is the peak resident memory during the operation (Linux VmHWM, reset
first) minus the memory before it, and for restores minus the restored tree
itself: what the operation costs on top of the data. Dirty pages are synced
before each measurement; restores read from the page cache.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

METHODS = ('np', 'np_fsync', 'flaxish', 'flaxish_async', 'flax')


def make_tree(gb: float):
  """A transformer-like tree of float32 arrays, about `gb` GB in total."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  d, vocab = 1024, 32000
  per_layer = (d * 3 * d + d * d + 2 * d * 4 * d + 4 * d) * 4
  layers = max(1, round((gb * 1e9 - vocab * d * 4) / per_layer))

  def arr(*shape):
    return jnp.asarray(rng.random(shape, dtype=np.float32))

  tree = {'embed': {'embedding': arr(vocab, d)}}
  for i in range(layers):
    tree[f'layer_{i}'] = {
        'attention': {'qkv': arr(d, 3 * d), 'out': arr(d, d)},
        'mlp': {'wi': arr(d, 4 * d), 'wo': arr(4 * d, d)},
        'ln': {'scale': arr(d), 'bias': arr(d), 'scale2': arr(d),
               'bias2': arr(d)}}
  return tree


def _leaves(tree, prefix=''):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


def _fsync(path):
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


class _Memory:
  """Peak resident memory of this process during a block (Linux only)."""

  def _status(self, field):
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1]) * 1024
    return None

  def __enter__(self):
    try:
      with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # resets VmHWM to the current RSS
      self.before = self._status('VmRSS')
    except OSError:
      self.before = None
    return self

  def __exit__(self, *exc):
    self.peak = self._status('VmHWM') if self.before is not None else None

  def extra(self, minus=0):
    if self.before is None or self.peak is None:
      return None
    return max(0, self.peak - self.before - minus)


def worker(method: str, op: str, ckpt_dir: str, gb: float) -> dict:
  """Runs one measurement in this (fresh) process; returns seconds, bytes."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  tree = make_tree(gb)
  jax.block_until_ready(tree)
  nbytes = sum(v.nbytes for _, v in _leaves(tree))
  largest = max(v.nbytes for _, v in _leaves(tree))
  os.sync()
  result = None
  if op == 'save':
    if os.path.exists(ckpt_dir):
      shutil.rmtree(ckpt_dir)
    os.makedirs(ckpt_dir)
    with _Memory() as mem:
      start = time.perf_counter()
      if method in ('np', 'np_fsync'):
        for name, value in _leaves(tree):
          path = os.path.join(ckpt_dir, name + '.npy')
          np.save(path, np.asarray(value))
          if method == 'np_fsync':
            _fsync(path)
        if method == 'np_fsync':
          _fsync(ckpt_dir)
      elif method == 'flaxish':
        from flaxish.training import checkpoints  # pylint: disable=g-import-not-at-top
        checkpoints.save_checkpoint(ckpt_dir, tree, 1)
      elif method == 'flaxish_async':
        from flaxish.training import checkpoints  # pylint: disable=g-import-not-at-top
        checkpointer = checkpoints.AsyncCheckpointer()
        checkpointer.save(ckpt_dir, tree, 1)
        blocking = time.perf_counter() - start
        checkpointer.close()
      elif method == 'flax':
        from flax import serialization  # pylint: disable=g-import-not-at-top
        path = os.path.join(ckpt_dir, 'checkpoint_1')
        with open(path, 'wb') as f:
          f.write(serialization.to_bytes(tree))
          f.flush()
          os.fsync(f.fileno())
        _fsync(ckpt_dir)
      seconds = time.perf_counter() - start
    extra = mem.extra()
    if method == 'flaxish_async':
      return {'seconds': blocking, 'total_seconds': seconds,
              'extra': extra, 'bytes': nbytes, 'largest': largest}
  else:
    with _Memory() as mem:
      start = time.perf_counter()
      if method in ('np', 'np_fsync'):
        result = {name: np.load(os.path.join(ckpt_dir, name + '.npy'))
                  for name, _ in _leaves(tree)}
      elif method == 'flaxish':
        from flaxish.training import checkpoints  # pylint: disable=g-import-not-at-top
        result = checkpoints.restore_checkpoint(ckpt_dir, tree)
      elif method == 'flax':
        from flax import serialization  # pylint: disable=g-import-not-at-top
        with open(os.path.join(ckpt_dir, 'checkpoint_1'), 'rb') as f:
          result = serialization.from_bytes(tree, f.read())
      seconds = time.perf_counter() - start
    extra = mem.extra(minus=nbytes)
    got = (result['embed.embedding'] if method.startswith('np')
           else result['embed']['embedding'])
    assert np.array_equal(np.asarray(got), np.asarray(
        tree['embed']['embedding']))
  return {'seconds': seconds, 'extra': extra, 'bytes': nbytes,
          'largest': largest}


def _run(method, op, ckpt_dir, gb):
  cmd = [sys.executable, os.path.abspath(__file__), '--worker', method, op,
         ckpt_dir, '--gb', str(gb)]
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep +
             os.environ.get('PYTHONPATH', ''), JAX_PLATFORMS='cpu')
  out = subprocess.run(cmd, env=env, capture_output=True, text=True,
                       check=False, timeout=1200)
  if out.returncode:
    raise RuntimeError(f'{method} {op} failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def _have_flax():
  import importlib.util  # pylint: disable=g-import-not-at-top
  return importlib.util.find_spec('flax') is not None


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--gb', type=float, default=1.0)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--dir', default=None,
                      help='where to write (default: a temp dir)')
  parser.add_argument('--markdown', default=None,
                      help='also write the table to this file')
  parser.add_argument('--worker', nargs=3, default=None,
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(worker(*args.worker, gb=args.gb)))
    return

  methods = [m for m in METHODS if m != 'flax' or _have_flax()]
  if 'flax' not in methods:
    print('flax is not installed: skipping the flax.serialization row')
  root = args.dir or tempfile.mkdtemp(prefix='bench_checkpoints_')
  runs = {(m, op): [] for m in methods for op in ('save', 'restore')}
  try:
    for rep in range(args.repeats):
      for method in methods:
        ckpt_dir = os.path.join(root, method)
        for op in ('save', 'restore'):
          if op == 'restore' and method in ('np_fsync', 'flaxish_async'):
            continue  # same files as np / flaxish
          runs[method, op].append(_run(method, op, ckpt_dir, args.gb))
          r = runs[method, op][-1]
          print(f'rep {rep} {method:14s} {op:8s} {r["seconds"]:7.3f} s  '
                f'extra {(r["extra"] or 0) / 2**20:8.1f} MiB', flush=True)
  finally:
    if not args.dir:
      shutil.rmtree(root, ignore_errors=True)

  def med(method, op, key='seconds'):
    values = [r[key] for r in runs[method, op] if r.get(key) is not None]
    return statistics.median(values) if values else None

  some = next(iter(v for v in runs.values() if v))[0]
  gbytes, largest = some['bytes'] / 1e9, some['largest']
  rows = []
  labels = {'np': 'np.save / np.load (no fsync)',
            'np_fsync': 'np.save + fsync',
            'flaxish': 'flaxish save_checkpoint / restore_checkpoint',
            'flaxish_async': 'flaxish AsyncCheckpointer.save (until it '
                             'returns)',
            'flax': 'flax to_bytes + write + fsync / read + from_bytes'}
  for method in methods:
    cells = [labels[method]]
    for op in ('save', 'restore'):
      seconds = med(method, op)
      extra = med(method, op, 'extra')
      if seconds is None:
        cells += ['', '']
        continue
      cells.append(f'{gbytes / seconds:.2f} GB/s ({seconds:.2f} s)')
      cells.append('n/a' if extra is None else
                   f'{extra / 2**20:.0f} MiB ({extra / largest:.2f}x)')
    rows.append(cells)
  header = ['method', 'save', 'save extra memory', 'restore',
            'restore extra memory']
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]

  def ratio(a, b):
    return f'{b / a:.2f}' if a and b else 'n/a'

  lines += ['', f'Tree: {gbytes:.3f} GB, largest array '
            f'{largest / 2**20:.0f} MiB; median of {args.repeats} runs.',
            f'- flaxish save vs np.save + fsync: '
            f'{ratio(med("flaxish", "save"), med("np_fsync", "save"))} '
            f'(vs np.save without fsync: '
            f'{ratio(med("flaxish", "save"), med("np", "save"))})',
            f'- flaxish restore vs np.load: '
            f'{ratio(med("flaxish", "restore"), med("np", "restore"))}']
  if 'flax' in methods:
    lines += [f'- flaxish speed-up over flax.serialization: save '
              f'{ratio(med("flaxish", "save"), med("flax", "save"))}x, '
              f'restore '
              f'{ratio(med("flaxish", "restore"), med("flax", "restore"))}x']
  table = '\n'.join(lines)
  print(table)
  if args.markdown:
    with open(args.markdown, 'w') as f:
      f.write(table + '\n')


if __name__ == '__main__':
  main()
