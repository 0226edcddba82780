"""Worker of test_multiprocess: trains the MNIST CNN in one of several
processes, with jit + NamedSharding and with pmap, then checkpoints.

    python _train_worker.py OUT_DIR PARAMS_NPZ

Started by `_launch.run_workers` (which sets XLA_FLAGS, JAX_PLATFORMS and
FLAXISH_*). Writes OUT_DIR/process<i>.npz (params after the jit steps, the
pmap steps, and as restored from the checkpoint) and OUT_DIR/process<i>.json.
"""
import json
import os
import sys

import jax
from jax.experimental import multihost_utils
import numpy as np

from flaxish import distributed
from flaxish.training import checkpoints
from flaxish.training import common_utils
from tests.distributed import _mnist_setup as setup


def main(out_dir, params_path):
  info = {'initialize': distributed.initialize(initialization_timeout=60,
                                               heartbeat_timeout_seconds=60)}
  info['initialize_again'] = distributed.initialize()  # a no-op
  info.update(process_index=jax.process_index(),
              process_count=jax.process_count(),
              device_count=jax.device_count(),
              local_device_count=jax.local_device_count())
  params = setup.load_params(params_path)
  results = {}

  # jit + NamedSharding over all 8 devices of both processes.
  mesh = distributed.data_parallel_mesh()
  replicated = distributed.replicated_sharding(mesh)
  step = jax.jit(setup.train_step,
                 in_shardings=(replicated, distributed.batch_sharding(mesh)),
                 out_shardings=replicated, donate_argnums=(0,))
  optimizer = distributed.replicate_on_mesh(setup.make_optimizer(params),
                                            mesh)
  rows = distributed.process_slice(setup.GLOBAL_BATCH)
  info['rows'] = [rows.start, rows.stop]
  for i in range(setup.NUM_STEPS):
    local = {k: v[rows] for k, v in setup.batch(i).items()}
    optimizer, loss = step(optimizer, distributed.global_batch(local, mesh))
    float(loss)  # one step at a time: queued collectives deadlock on CPU
  kernel = optimizer.target.params['Conv_0']['kernel']
  info['jit_sharding_replicated'] = bool(
      kernel.sharding.is_equivalent_to(replicated, kernel.ndim))
  info['jit_is_global'] = not kernel.is_fully_addressable
  results.update({f'jit/{k}': v for k, v in
                  setup.flat(optimizer.target.params).items()})

  # pmap over the local devices; the gradient pmean spans both processes.
  p_step = jax.pmap(setup.train_step, axis_name='batch')
  p_optimizer = setup.make_optimizer(params).replicate()
  for i in range(setup.NUM_STEPS):
    local = {k: v[rows] for k, v in setup.batch(i).items()}
    p_optimizer, loss = p_step(p_optimizer, common_utils.shard(local))
    float(loss[0])
  results.update({f'pmap/{k}': v for k, v in
                  setup.flat(p_optimizer.unreplicate().target.params).items()})

  # Checkpoint: only process 0 writes; both restore.
  ckpt_dir = os.path.join(out_dir, 'ckpt')
  writes = []
  write = checkpoints._write_atomically  # pylint: disable=protected-access

  def counting_write(state, path, *args, **kwargs):
    writes.append(path)
    return write(state, path, *args, **kwargs)

  # pylint: disable-next=protected-access
  checkpoints._write_atomically = counting_write
  path = checkpoints.save_checkpoint(ckpt_dir, optimizer, setup.NUM_STEPS)
  info['checkpoint_path'] = path
  info['writes'] = len(writes)
  multihost_utils.sync_global_devices('checkpoint saved')
  restored = checkpoints.restore_checkpoint(ckpt_dir,
                                            setup.make_optimizer(params))
  info['restored_step'] = int(restored.state.step)
  results.update({f'restored/{k}': v for k, v in
                  setup.flat(restored.target.params).items()})
  # The restored host arrays go back onto the mesh unchanged.
  again = distributed.replicate_on_mesh(restored, mesh)
  info['replicated_again_equal'] = all(
      np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
          jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(
              optimizer)))
  multihost_utils.sync_global_devices('restored')

  me = jax.process_index()
  np.savez(os.path.join(out_dir, f'process{me}.npz'), **results)
  with open(os.path.join(out_dir, f'process{me}.json'), 'w') as f:
    json.dump(info, f)
  print(f'process {me}: done', flush=True)


if __name__ == '__main__':
  main(*sys.argv[1:])
