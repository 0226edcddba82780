"""The Flax Linen + optax side of a workload (imported only when flax is
installed): `module.init` / `module.apply` with the `batch_stats` collection
mutable in training, and an optax update, as in today's Flax examples."""
import jax
import jax.numpy as jnp
import optax

from benchmarks.workloads.base import Impl, accuracy, cross_entropy

__all__ = ['make_impl']


def make_impl(module, input_spec, tx, stateful=False, train_kwargs=None,
              eval_kwargs=None) -> Impl:
  """An `Impl` for a Linen module instance.

  Arguments:
    module: the `flax.linen.Module` instance.
    input_spec: `(shape, dtype)` of the model input.
    tx: an optax `GradientTransformation`.
    stateful: the model has a `batch_stats` collection.
    train_kwargs / eval_kwargs: keyword arguments of `__call__` in each
      mode; initialization uses `eval_kwargs`.
  """
  train_kwargs = train_kwargs or {}
  eval_kwargs = eval_kwargs or {}

  def split(variables):
    return variables['params'], variables.get('batch_stats', {})

  def init_by_shape(rng):
    # Linen has no shape-only init that returns values: the usual idiom is
    # `init` on a dummy batch of ones.
    shape, dtype = input_spec
    return split(module.init(rng, jnp.ones(shape, dtype), **eval_kwargs))

  def init(rng, batch):
    return split(module.init(rng, batch['x'], **eval_kwargs))

  def make_state(params, stats):
    return params, tx.init(params), stats

  def forward(params, stats, x):
    if not stateful:
      return module.apply({'params': params}, x, **train_kwargs), stats
    y, updates = module.apply({'params': params, 'batch_stats': stats}, x,
                              mutable=['batch_stats'], **train_kwargs)
    return y, updates['batch_stats']

  def train_step(state, batch):
    params, opt_state, stats = state

    def loss_fn(p):
      logits, new_stats = forward(p, stats, batch['x'])
      return cross_entropy(logits, batch['y']), new_stats

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, opt_state, new_stats), loss

  def eval_step(state, batch):
    params, _, stats = state
    variables = {'params': params}
    if stateful:
      variables['batch_stats'] = stats
    logits = module.apply(variables, batch['x'], **eval_kwargs)
    return {'loss': cross_entropy(logits, batch['y']),
            'accuracy': accuracy(logits, batch['y'])}

  def loss(params, stats, batch):
    logits, new_stats = forward(params, stats, batch['x'])
    return cross_entropy(logits, batch['y']), new_stats

  return Impl('linen', init_by_shape, init, make_state, train_step,
              eval_step, loss, lambda s: s[0], lambda s: s[2])
