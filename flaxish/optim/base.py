"""`OptimizerDef` (an update rule), `Optimizer` (target + state, a pytree),
replication, `MultiOptimizer` and `ModelParamTraversal`::

  optimizer = optim.Adam(learning_rate=1e-3).create(model)
  grads = jax.grad(loss_fn)(optimizer.target)
  optimizer = optimizer.apply_gradient(grads, learning_rate=lr_fn(step))
"""
import dataclasses
from typing import Any, Callable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from flaxish import jax_utils
from flaxish import serialization
from flaxish import struct
from flaxish import traverse_util
from flaxish.traverse_util import path_str

__all__ = ['OptimizerState', 'OptimizerDef', 'Optimizer',
           'ReplicatedOptimizer', 'MultiOptimizer', 'ModelParamTraversal',
           'param_state']


@struct.dataclass
class OptimizerState:
  """`step` (int32 scalar, updates applied so far) and per-param states."""
  step: Any
  param_states: Any


def initial_state(param_states: Any) -> OptimizerState:
  """`OptimizerState` at step 0 (an int32 scalar)."""
  return OptimizerState(jnp.asarray(0, jnp.int32), param_states)


def param_state(cls):
  """Decorates a `typing.NamedTuple` of per-parameter optimizer state: its
  state dict is `{field: value}` (the 2020 layout); adds `replace(**kw)`."""
  if not (issubclass(cls, tuple) and hasattr(cls, '_fields')):
    raise TypeError(f'param_state decorates a typing.NamedTuple, got {cls}')
  fields = cls._fields
  cls.replace = lambda self, **updates: self._replace(**updates)

  def to_state(x):
    return {name: serialization.to_state_dict(getattr(x, name))
            for name in fields}

  def from_state(x, state):
    missing = [name for name in fields if name not in state]
    unknown = sorted(set(state) - set(fields))
    if missing or unknown:
      raise ValueError(f'the state dict of a {cls.__name__} must have the '
                       f'fields {list(fields)}; missing {missing}, unknown '
                       f'{unknown}')
    return cls(*(serialization.from_state_dict(getattr(x, name), state[name])
                 for name in fields))

  serialization.register_serialization_state(cls, to_state, from_state,
                                             override=True)
  return cls


def cast_like(x: Any, ref: Any) -> Any:
  """`x` as a JAX array of the dtype JAX gives `ref` (float64 -> float32)."""
  return jnp.asarray(x, jnp.result_type(ref))


def is_static_zero(x: Any) -> bool:
  """True if `x` is a Python number equal to 0 (so work can be skipped)."""
  return isinstance(x, (int, float)) and not isinstance(x, bool) and x == 0


def _children(x):
  """`([(key, child), ...], structure of x down to its children)`."""
  return jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)


def _node_desc(x) -> str:
  if jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(x)):
    return f'a leaf of type {type(x).__name__}'
  keys = [path_str(k)[1:] for k, _ in _children(x)[0]]
  return f'a {type(x).__name__} with keys {keys}'


def _first_difference(a, b, path=()) -> Optional[Tuple[str, str, str]]:
  """Where the structures of `a` and `b` first differ, or None if equal."""
  if jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b):
    return None
  (ca, top_a), (cb, top_b) = _children(a), _children(b)
  if top_a == top_b:
    for (key, va), (_, vb) in zip(ca, cb):
      diff = _first_difference(va, vb, path + tuple(key))
      if diff is not None:
        return diff
  return path_str(path), _node_desc(a), _node_desc(b)


def check_gradients(params: Any, grads: Any) -> None:
  """Raises ValueError at the first path where `grads` and `params` differ
  in structure or shape."""
  diff = _first_difference(params, grads)
  if diff is not None:
    path, pa, ga = diff
    raise ValueError(
        f'the gradient tree does not match the parameters: at {path} the '
        f'parameters have {pa} but the gradients have {ga}. Pass gradients '
        'with the structure of optimizer.target (e.g. '
        'jax.grad(loss_fn)(optimizer.target)).')
  p_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  g_leaves = jax.tree_util.tree_leaves(grads)
  for (path, p), g in zip(p_leaves, g_leaves):
    if np.shape(p) != np.shape(g):
      raise ValueError(
          f'the gradient at {path_str(path)} has shape {np.shape(g)} but the '
          f'parameter has shape {np.shape(p)}')


class OptimizerDef:
  """An update rule and its `hyper_params` (a `struct.dataclass`).

  Subclasses implement `init_param_state(param)` and
  `apply_param_gradient(step, hyper_params, param, state, grad)` (one leaf),
  or override `init_state` / `apply_gradient` for the whole tree.
  """

  def __init__(self, hyper_params: Any):
    self.hyper_params = hyper_params

  def apply_param_gradient(self, step, hyper_params, param, state, grad):
    """Returns `(new_param, new_state)` for one parameter leaf."""
    raise NotImplementedError(
        f'{type(self).__name__} must implement apply_param_gradient')

  def init_param_state(self, param):
    """Returns the initial state of one parameter leaf."""
    raise NotImplementedError(
        f'{type(self).__name__} must implement init_param_state')

  def check_hyper_params(self, hyper_params: Any) -> None:
    """Raises ValueError if a required hyper-parameter is missing."""
    if getattr(hyper_params, 'learning_rate', 0) is None:
      name = type(self).__name__
      raise ValueError(
          f'{name}: no learning_rate given. Pass it when building the '
          f'optimizer, e.g. {name}(learning_rate=0.1), or at every step: '
          'optimizer.apply_gradient(grads, learning_rate=lr).')

  def apply_gradient(self, hyper_params, params, state, grads):
    """Returns `(new_params, new_state)`, the step counter one higher."""
    self.check_hyper_params(hyper_params)
    check_gradients(params, grads)
    params_flat, treedef = jax.tree_util.tree_flatten(params)
    out = [self.apply_param_gradient(state.step, hyper_params, p, s, g)
           for p, s, g in zip(params_flat,
                              treedef.flatten_up_to(state.param_states),
                              treedef.flatten_up_to(grads))]
    new_params, new_states = zip(*out) if out else ((), ())
    return treedef.unflatten(new_params), OptimizerState(
        state.step + 1, treedef.unflatten(new_states))

  def init_state(self, params) -> Any:
    """Returns `OptimizerState(0, <init_param_state of every leaf>)`."""
    return initial_state(jax.tree_util.tree_map(self.init_param_state,
                                                params))

  def hyper_param_names(self, hyper_params: Any = None) -> Tuple[str, ...]:
    """The names `update_hyper_params` accepts (`'*'`: any name)."""
    hp = self.hyper_params if hyper_params is None else hyper_params
    return tuple(f.name for f in dataclasses.fields(hp))

  def update_hyper_params(self, **hyper_param_overrides) -> Any:
    """The hyper-parameters with overrides (`learning_rate=lr`, maybe traced)
    applied; `hyper_params=...` replaces them all."""
    hp = hyper_param_overrides.pop('hyper_params', self.hyper_params)
    if hyper_param_overrides:
      self.check_override_names(hyper_param_overrides, hp)
      hp = hp.replace(**hyper_param_overrides)
    return hp

  def check_override_names(self, overrides: Any, hyper_params: Any) -> None:
    """Raises TypeError for a name `update_hyper_params` does not accept."""
    names = self.hyper_param_names(hyper_params)
    unknown = sorted(set(overrides) - set(names))
    if unknown and '*' not in names:
      raise TypeError(
          f'{type(self).__name__} has no hyper-parameter(s) {unknown}; '
          f'the hyper-parameters are {list(names)}')

  def create(self, target: Any,
             focus: Optional[traverse_util.Traversal] = None) -> 'Optimizer':
    """An `Optimizer` for `target` (params or an `nn.Model`); `focus`, a
    traversal, limits it to part of `target` (through a `MultiOptimizer`)."""
    opt_def = self if focus is None else MultiOptimizer((focus, self))
    return Optimizer(opt_def, opt_def.init_state(target), target)

  def state_dict(self, target: Any, state: Any) -> Any:
    """`{'target': ..., 'state': ...}` as nested dicts of arrays."""
    return {'target': serialization.to_state_dict(target),
            'state': serialization.to_state_dict(state)}

  def restore_state(self, opt_target: Any, opt_state: Any,
                    state_dict: Any) -> Tuple[Any, Any]:
    """`(target, state)` from a `state_dict()` dict, in the structure of
    `opt_target` / `opt_state`."""
    for key in ('target', 'state'):
      if key not in state_dict:
        raise ValueError(f'missing "{key}" in the optimizer state dict '
                         f'(found keys {sorted(state_dict)})')
    return (serialization.from_state_dict(opt_target, state_dict['target']),
            serialization.from_state_dict(opt_state, state_dict['state']))


class _NoAux:
  """Marks that a loss function returned no auxiliary output."""


@struct.dataclass
class Optimizer:
  """The `target` being optimized (params or an `nn.Model`), its `state` and
  the `optimizer_def` (static: not a pytree child)."""
  optimizer_def: OptimizerDef = struct.field(pytree_node=False)
  state: Any
  target: Any

  def apply_gradient(self, grads: Any, **hyper_param_overrides) -> 'Optimizer':
    """A new optimizer with `grads` (shaped like `target`) applied; keywords
    override hyper-parameters for this step, e.g. `learning_rate=lr`."""
    hyper_params = self.optimizer_def.update_hyper_params(
        **hyper_param_overrides)
    new_target, new_state = self.optimizer_def.apply_gradient(
        hyper_params, self.target, self.state, grads)
    return self.replace(target=new_target, state=new_state)

  def compute_gradient(self, loss_fn: Callable[[Any], Any]) -> Tuple[Any, ...]:
    """`(loss, grad)`, or `(loss, aux, grad)` if `loss_fn(target)` returns
    `(loss, aux)`."""
    def wrapped(target):
      out = loss_fn(target)
      is_pair = isinstance(out, (tuple, list)) and len(out) == 2
      return tuple(out) if is_pair else (out, _NoAux)

    (loss, aux), grad = jax.value_and_grad(wrapped, has_aux=True)(self.target)
    return (loss, grad) if aux is _NoAux else (loss, aux, grad)

  compute_gradients = compute_gradient

  def optimize(self, loss_fn: Callable[[Any], Any],
               **hyper_param_overrides) -> Tuple[Any, ...]:
    """One step on `loss_fn(target)`: returns `(optimizer, loss[, aux])`."""
    *outputs, grad = self.compute_gradient(loss_fn)
    return (self.apply_gradient(grad, **hyper_param_overrides), *outputs)

  def is_replicated(self) -> bool:
    """True if this optimizer came from `replicate()`/`jax_utils.replicate`."""
    return isinstance(self.optimizer_def, ReplicatedOptimizer)

  def replicate(self, devices: Optional[Sequence[Any]] = None,
                axis_name: Any = 'batch') -> 'Optimizer':
    """One copy per device (default `jax.local_devices()`), stacked on a new
    leading axis; inside `jax.pmap(..., axis_name=axis_name)`,
    `apply_gradient` first averages the gradients over the devices."""
    if self.is_replicated():
      raise ValueError('this optimizer is already replicated; call '
                       'unreplicate() first to replicate it differently')
    opt_def = ReplicatedOptimizer(self.optimizer_def, devices, axis_name)
    return jax_utils.replicate_leaves(self.replace(optimizer_def=opt_def),
                                       opt_def.devices, axis_name)

  def unreplicate(self) -> 'Optimizer':
    """Returns the first device's copy, as an unreplicated optimizer."""
    if not self.is_replicated():
      raise ValueError(
          'unreplicate: this optimizer is not replicated (it did not come '
          'from optimizer.replicate() or jax_utils.replicate()); use it '
          'as it is')
    return jax_utils.unreplicate_leaves(self._jax_utils_unreplicate())

  def _jax_utils_replicate(self, devices):  # before jax_utils.replicate
    if self.is_replicated():
      raise ValueError('jax_utils.replicate: this optimizer is already '
                       'replicated; call unreplicate() first')
    return self.replace(optimizer_def=ReplicatedOptimizer(
        self.optimizer_def, devices, axis_name=None))

  def _jax_utils_unreplicate(self):  # before jax_utils.unreplicate
    if self.is_replicated():
      return self.replace(optimizer_def=self.optimizer_def.optimizer_def)
    return self

  def state_dict(self) -> Any:
    """`{'target': ..., 'state': ...}`; one copy if replicated."""
    return self.optimizer_def.state_dict(self.target, self.state)

  def restore_state(self, state: Any) -> 'Optimizer':
    """Returns this optimizer with target and state from a state dict."""
    target, state = self.optimizer_def.restore_state(self.target, self.state,
                                                     state)
    return self.replace(target=target, state=state)


serialization.register_serialization_state(
    Optimizer, Optimizer.state_dict, Optimizer.restore_state, override=True)


def _has_device_axis(state: Any) -> bool:
  """True unless the state's step counter is a scalar (not replicated)."""
  while isinstance(state, (list, tuple)) and state:
    state = state[0]
  return not isinstance(state, OptimizerState) or np.ndim(state.step) >= 1


class ReplicatedOptimizer(OptimizerDef):
  """Wraps a def whose target and state carry a leading device axis: with an
  `axis_name`, `apply_gradient` averages the gradients over it; state dicts
  hold one copy."""

  def __init__(self, optimizer_def: OptimizerDef,
               devices: Optional[Sequence[Any]] = None,
               axis_name: Any = 'batch'):
    super().__init__(optimizer_def.hyper_params)
    self.optimizer_def = optimizer_def
    self.devices = (list(devices) if devices is not None
                    else jax.local_devices())
    self.axis_name = axis_name

  def init_state(self, params):
    return self.optimizer_def.init_state(params)

  def hyper_param_names(self, hyper_params=None):
    return self.optimizer_def.hyper_param_names(hyper_params)

  def update_hyper_params(self, **hyper_param_overrides):
    return self.optimizer_def.update_hyper_params(**hyper_param_overrides)

  def apply_gradient(self, hyper_params, params, state, grads):
    if self.axis_name is not None:
      try:
        grads = jax.lax.pmean(grads, axis_name=self.axis_name)
      except NameError as e:
        raise ValueError(
            'this optimizer was replicated with axis_name='
            f'{self.axis_name!r}: call apply_gradient inside '
            f'jax.pmap(train_step, axis_name={self.axis_name!r}) (or '
            'unreplicate() it to train on one device)') from e
    return self.optimizer_def.apply_gradient(hyper_params, params, state,
                                             grads)

  def state_dict(self, target, state):
    if _has_device_axis(state):
      target, state = jax_utils.unreplicate_leaves((target, state))
    return self.optimizer_def.state_dict(target, state)

  def restore_state(self, target, opt_state, state_dict):
    if _has_device_axis(opt_state):
      state_dict = jax_utils.replicate_leaves(
          state_dict, self.devices, self.axis_name or 'batch')
    return self.optimizer_def.restore_state(target, opt_state, state_dict)


class _Tag:
  """A unique leaf marking what a traversal selects."""


class MultiOptimizer(OptimizerDef):
  """Each `(traversal, optimizer_def)` pair updates the parameters its
  traversal selects (others stay unchanged); the state is a list with one
  `OptimizerState` per pair. Overrides go to every sub-optimizer that has
  that hyper-parameter; `hyper_params=[...]` replaces them all::

    kernels = optim.ModelParamTraversal(lambda path, _: 'kernel' in path)
    biases = optim.ModelParamTraversal(lambda path, _: 'bias' in path)
    opt_def = optim.MultiOptimizer((kernels, optim.Momentum(0.01)),
                                   (biases, optim.Adam(0.1)))
  """

  def __init__(self, *traversals_and_optimizers: Tuple[
      traverse_util.Traversal, OptimizerDef]):
    if not traversals_and_optimizers:
      raise ValueError('MultiOptimizer needs at least one '
                       '(traversal, optimizer_def) pair')
    for i, pair in enumerate(traversals_and_optimizers):
      if (not isinstance(pair, tuple) or len(pair) != 2 or
          not isinstance(pair[0], traverse_util.Traversal) or
          not isinstance(pair[1], OptimizerDef)):
        raise TypeError(
            f'MultiOptimizer argument #{i} must be a (traversal, '
            f'optimizer_def) pair, got {pair!r}')
    traversals, sub_optimizers = zip(*traversals_and_optimizers)
    super().__init__([opt.hyper_params for opt in sub_optimizers])
    self.traversals = traversals
    self.sub_optimizers = sub_optimizers

  def _check_selection(self, params):
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    owners = [[] for _ in leaves]
    for i, traversal in enumerate(self.traversals):
      tag = _Tag()
      tagged = traversal.update(
          lambda x, tag=tag: jax.tree_util.tree_map(lambda _: tag, x), params)
      tagged_leaves = jax.tree_util.tree_leaves(tagged)
      if not any(x is tag for x in tagged_leaves):
        hint = ''
        if isinstance(traversal, ModelParamTraversal):
          paths = [p for p, _ in traversal.paths(params)]
          shown = ', '.join(repr(p) for p in paths[:12])
          more = f' and {len(paths) - 12} more' if len(paths) > 12 else ''
          hint = (f'; its filter returned False for every parameter path '
                  f'({shown}{more})')
        raise ValueError(
            f'MultiOptimizer: traversal #{i} selects no parameters{hint}. '
            'Fix the filter, or drop this (traversal, optimizer) pair.')
      if len(tagged_leaves) == len(leaves):
        for j, x in enumerate(tagged_leaves):
          if x is tag:
            owners[j].append(i)
    for (path, _), own in zip(leaves, owners):
      if len(own) > 1:
        raise ValueError(
            f'MultiOptimizer: the parameter at {path_str(path)} is selected '
            f'by traversals {own}; each parameter may be updated by one '
            'optimizer only')

  def init_state(self, params):
    self._check_selection(params)
    return [opt.init_state(list(traversal.iterate(params)))
            for traversal, opt in zip(self.traversals, self.sub_optimizers)]

  def apply_gradient(self, hyper_params, params, states, grads):
    check_gradients(params, grads)
    new_params = params
    new_states = []
    for traversal, opt, hp, state in zip(self.traversals, self.sub_optimizers,
                                         hyper_params, states):
      new_ps, new_state = opt.apply_gradient(
          hp, list(traversal.iterate(params)), state,
          list(traversal.iterate(grads)))
      new_params = traversal.set(list(new_ps), new_params)
      new_states.append(new_state)
    return new_params, new_states

  def hyper_param_names(self, hyper_params=None):
    hps = self.hyper_params if hyper_params is None else hyper_params
    names = []
    for opt, hp in zip(self.sub_optimizers, hps):
      names.extend(n for n in opt.hyper_param_names(hp) if n not in names)
    return tuple(names)

  def update_hyper_params(self, **hyper_param_overrides):
    hps = hyper_param_overrides.pop('hyper_params', self.hyper_params)
    if not hyper_param_overrides:
      return list(hps)
    names = self.hyper_param_names(hps)
    unknown = sorted(set(hyper_param_overrides) - set(names))
    if unknown and '*' not in names:
      raise TypeError(f'no sub-optimizer of this MultiOptimizer has the '
                      f'hyper-parameter(s) {unknown}')
    new_hps = []
    for opt, hp in zip(self.sub_optimizers, hps):
      names = opt.hyper_param_names(hp)
      mine = {k: v for k, v in hyper_param_overrides.items()
              if k in names or '*' in names}
      new_hps.append(opt.update_hyper_params(hyper_params=hp, **mine))
    return new_hps


def _sorted_param_items(inputs):
  """`(path tuple, value)` of an `nn.Model`'s params, sorted by path."""
  from flaxish import nn  # pylint: disable=g-import-not-at-top
  model_type = getattr(nn, 'Model', None)
  if model_type is None or not isinstance(inputs, model_type):
    raise ValueError(
        'ModelParamTraversal can only traverse an nn.Model, not a '
        f'{type(inputs).__name__}; wrap the params with '
        'nn.Model(module, params) or use a traverse_util traversal such as '
        "traverse_util.t_identity['params']")
  flat = traverse_util.flatten_dict(inputs.params, keep_empty_nodes=True)
  return sorted(flat.items(), key=lambda kv: kv[0])


class ModelParamTraversal(traverse_util.Traversal):
  """Selects the params of an `nn.Model` for which `filter_fn(path, value)`
  is true, in sorted path order (paths look like `'/Dense_0/kernel'`)."""

  def __init__(self, filter_fn: Callable[[str, Any], bool]):
    self._filter_fn = filter_fn

  def paths(self, inputs) -> List[Tuple[str, Any]]:
    """All `(path, value)` pairs of the model's params, in visiting order."""
    return [('/' + '/'.join(key), value)
            for key, value in _sorted_param_items(inputs)
            if value is not traverse_util.empty_node]

  def iterate(self, inputs):
    for path, value in self.paths(inputs):
      if self._filter_fn(path, value):
        yield value

  def update(self, fn, inputs):
    new_flat = {}
    for key, value in _sorted_param_items(inputs):
      if (value is not traverse_util.empty_node and
          self._filter_fn('/' + '/'.join(key), value)):
        value = fn(value)
      new_flat[key] = value
    return inputs.replace(params=traverse_util.unflatten_dict(new_flat))
