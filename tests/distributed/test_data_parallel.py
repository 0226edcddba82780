"""jit over global arrays and pmap train the MNIST CNN on 8 fake CPU devices
to the parameters of single-device training on the same global batches.

(The multi-process test runs a step jitted with explicit `in_shardings` /
`out_shardings`; here the example's own `train_step`, jitted without
shardings, takes them from its global-array arguments.)
"""
import jax

from examples.mnist import train
from flaxish import distributed
from flaxish.training import common_utils
from tests.distributed import _mnist_setup as setup


def test_example_train_step_with_global_arrays_matches_single_device():
  reference = setup.reference_params()
  mesh = distributed.data_parallel_mesh()
  assert mesh.shape == {'data': 8}
  replicated = distributed.replicated_sharding(mesh)
  optimizer = distributed.replicate_on_mesh(
      setup.make_optimizer(setup.initial_params()), mesh)
  constant_rate = train.create_learning_rate_fn(
      'constant', setup.LEARNING_RATE, steps_per_epoch=1,
      num_epochs=setup.NUM_STEPS)
  for i in range(setup.NUM_STEPS):
    # One process: its local batch is the global batch. shard_on_mesh takes
    # the same whole batch on every process; both give the same array.
    if i % 2:
      batch = distributed.shard_on_mesh(setup.batch(i), mesh)
    else:
      batch = distributed.global_batch(setup.batch(i), mesh)
    assert batch['image'].sharding == distributed.batch_sharding(mesh)
    optimizer, metrics = train.train_step(optimizer, batch, constant_rate)
    float(metrics['loss'])  # one step at a time
  # XLA keeps the parameters and optimizer state replicated on the mesh.
  for leaf in jax.tree_util.tree_leaves(optimizer):
    assert leaf.sharding.is_equivalent_to(replicated, leaf.ndim)
  assert int(optimizer.state.step) == setup.NUM_STEPS
  setup.assert_params_close(setup.flat(optimizer.target.params), reference,
                            'jit over global arrays')


def test_pmap_matches_single_device():
  reference = setup.reference_params()
  p_step = jax.pmap(setup.train_step, axis_name='batch')
  optimizer = setup.make_optimizer(setup.initial_params()).replicate()
  for i in range(setup.NUM_STEPS):
    optimizer, loss = p_step(optimizer, common_utils.shard(setup.batch(i)))
    float(loss[0])
  setup.assert_params_close(
      setup.flat(optimizer.unreplicate().target.params), reference, 'pmap')
