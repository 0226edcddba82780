"""Replay plans: the parameters of a repeated `init` in one compiled call.

An `init` (or `init_by_shape`) with a concrete rng asks `_param_init` for
parameter values and state keys one at a time, each one compiled call
through JAX's Python dispatch path (about 0.3 ms each; after
`jax.clear_caches()`, one XLA compile per initializer, shape and key depth).
A `Session` records these requests, in order, as the module's plan:
`('param', path, (initializer signature, shape))` and `('split', path)`,
where `path` is the key's derivation from the root key (name hashes and
split steps, `LazyKey.path`).

A later `init` of the same root module (same class, name, bound and
call-time arguments, input shapes and key type) computes every entry of that
plan at its first request, in ONE jitted program of the root key, and serves
a request from that table only if it is exactly an entry of the plan.
Anything else -- new or changed parameters, user initializers, traced rngs,
`reuse_params` entries -- is made as without a plan. Values never depend on
whether a plan was used: the program derives keys with the same integer
arithmetic and runs the same trusted initializers on the same shapes,
compiled like theirs without XLA's algebraic simplifier.

A plan is used once two calls in a row asked for exactly the same (from the
third such call on): its program costs an XLA compile of about the
size of the per-parameter programs together (seconds for a ResNet), which
pays off only over repeated calls, so a module initialized once or twice,
or one whose parameters change from call to call, never compiles one. Plans
hold no values (keys' paths, initializers and shapes), at most `_MAX_PLANS`
of them.
"""
import collections
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from flaxish.nn import _param_init as param_init
from flaxish.nn.utils import is_tracer

__all__ = ['Session', 'start', 'plan_key']

_MAX_PLANS = 64
# Parameters of one initializer and shape are computed in a loop whose
# stacked output is then sliced: both exist for a moment. Larger groups are
# left to the one-by-one path.
_MAX_STACKED_BYTES = 1 << 28
_AS_EAGER = param_init._AS_EAGER  # pylint: disable=protected-access
_NOT_SERVED = param_init.NOT_SERVED
_SPLIT_STEPS = (param_init.SPLIT_LEFT, param_init.SPLIT_RIGHT)
_SPLIT = object()  # a split entry of the table, not served yet
Path = Tuple[int, ...]


class _KeyTree:
  """Every key on the given paths, derived level by level (path depth).

  A level is one batched fold-in and one batched split of keys of the level
  above: integer arithmetic, the same bits as one key at a time, in a
  program whose size grows with the depth, not the number of keys.

  Attributes:
    where: path -> (level, index in the level's key array).
  """

  def __init__(self, paths: List[Path]):
    by_depth: Dict[int, set] = collections.defaultdict(set)
    for path in paths:
      for depth in range(1, len(path) + 1):
        by_depth[depth].add(path[:depth])
    self.where: Dict[Path, Tuple[int, int]] = {(): (0, 0)}
    self._levels = []  # (fold parents, fold hashes, split parents) indices
    for depth in range(1, max(by_depth, default=0) + 1):
      nodes = sorted(by_depth[depth])
      folds = [n for n in nodes if n[-1] >= 0]
      splits = sorted({n[:-1] for n in nodes if n[-1] < 0})
      self._levels.append((
          np.array([self.where[n[:-1]][1] for n in folds], np.int32),
          np.array([n[-1] for n in folds], np.uint32),
          np.array([self.where[n][1] for n in splits], np.int32)))
      for i, node in enumerate(folds):
        self.where[node] = (depth, i)
      for i, node in enumerate(splits):
        for j, step in enumerate(_SPLIT_STEPS):
          self.where[node + (step,)] = (depth, len(folds) + 2 * i + j)

  def derive(self, root: Any) -> List[Any]:
    """The key arrays of all levels; level 0 holds `root` alone."""
    levels = [root[None]]
    for fold_parents, hashes, split_parents in self._levels:
      parts = []
      if len(hashes):
        parts.append(jax.vmap(jax.random.fold_in)(levels[-1][fold_parents],
                                                  hashes))
      if len(split_parents):
        halves = jax.vmap(jax.random.split)(levels[-1][split_parents])
        parts.append(halves.reshape((-1,) + halves.shape[2:]))
      levels.append(parts[0] if len(parts) == 1 else jnp.concatenate(parts))
    return levels


class _Plan:
  """The requests of one `init`, and the program that computes them all."""
  __slots__ = ('entries', 'initializers', 'index', 'confirmed', 'failed',
               'keys', '_program')

  def __init__(self, entries: Tuple[Any, ...],
               initializers: Tuple[Optional[Callable[..., Any]], ...]):
    self.entries = entries
    self.initializers = initializers
    self.index = {entry: i for i, entry in enumerate(entries)}
    self.confirmed = False  # a later call asked for exactly the same
    self.failed = False  # its program raised: not tried again
    self.keys: Optional[_KeyTree] = None
    self._program = None

  def compute(self, root: Any) -> Tuple[List[Any], Dict[int, Any]]:
    """`(key levels, {entry index: value})` in one call.

    The keys of split entries come back only as the level arrays (see
    `_KeyTree.where`): they are needed only by requests outside the plan.
    Parameters of groups too large to stack (`_MAX_STACKED_BYTES`) are not
    computed: they are made one by one as without a plan.
    """
    if self._program is None:
      paths = []
      for entry in self.entries:
        if entry[0] == 'split':
          paths += [entry[1] + (step,) for step in _SPLIT_STEPS]
        else:
          paths.append(entry[1])
      self.keys = _KeyTree(paths)
      self._program = jax.jit(self._values, compiler_options=_AS_EAGER)
    with jax.ensure_compile_time_eval():
      return self._program(root)

  def _values(self, root: Any) -> Tuple[List[Any], Dict[int, Any]]:
    levels = self.keys.derive(root)

    def key(path):
      level, i = self.keys.where[path]
      return levels[level][i]

    values: Dict[int, Any] = {}
    groups: Dict[Any, List[int]] = collections.defaultdict(list)
    for i, entry in enumerate(self.entries):
      if entry[0] == 'param':
        groups[entry[2]].append(i)
    # One computation per (initializer, shape), looped over its keys: the
    # program grows with the number of distinct initializers and shapes,
    # and each value is computed as in a program of its own.
    for (_, shape), members in groups.items():
      initializer = self.initializers[members[0]]
      if len(members) == 1:
        values[members[0]] = initializer(key(self.entries[members[0]][1]),
                                         shape)
        continue
      def one(k, initializer=initializer, shape=shape):
        return initializer(k, shape)

      keys = jnp.stack([key(self.entries[i][1]) for i in members])
      out = jax.eval_shape(one, jax.ShapeDtypeStruct(keys.shape[1:],
                                                     keys.dtype))
      if _nbytes(out) * len(members) > _MAX_STACKED_BYTES:
        continue  # the loop's output would double their memory for a moment
      stacked = jax.lax.map(one, keys)
      for j, i in enumerate(members):
        values[i] = jax.tree_util.tree_map(lambda x, j=j: x[j], stacked)
    return levels, values


def _nbytes(tree: Any) -> int:
  return sum(x.size * x.dtype.itemsize
             for x in jax.tree_util.tree_leaves(tree))


# plan key -> _Plan, least recently used first.
_plans: 'collections.OrderedDict[Hashable, _Plan]' = collections.OrderedDict()


class Session:
  """The requests of one `init` with a concrete rng, served from a plan."""

  def __init__(self, key: Hashable, rng: Any):
    self._key = key
    self._rng = rng
    self._plan = _plans.get(key)
    self._table: Optional[List[Any]] = None
    self._levels: Optional[List[Any]] = None
    self._fetched: Dict[Path, Any] = {}
    self._started = False
    self._entries: List[Any] = []
    self._initializers: List[Optional[Callable[..., Any]]] = []

  def root_key(self) -> param_init.LazyKey:
    """The root frame's key: the rng, with this session attached."""
    return param_init.LazyKey(self._rng, (), self, ())

  def take(self, entry: Any) -> Any:
    """The plan's value for `entry`, or `param_init.NOT_SERVED`.

    A split is served as `(None, None)`: its keys are computed, but fetched
    (`key_at`) only if a request outside the plan needs them. The first
    request computes the whole plan if it is the plan's first entry; each
    entry is served once.
    """
    if not self._started:
      self._started = True
      plan = self._plan
      if (plan is not None and plan.confirmed and not plan.failed and
          plan.entries[0] == entry):
        try:
          self._levels, values = plan.compute(self._rng)
        except Exception:  # pylint: disable=broad-except
          plan.failed = True  # made one by one, as without a plan
        else:
          self._table = [_SPLIT if entry[0] == 'split' else values.get(i)
                         for i, entry in enumerate(plan.entries)]
    if self._table is None:
      return _NOT_SERVED
    i = self._plan.index.get(entry)
    if i is None or self._table[i] is None:
      return _NOT_SERVED
    value, self._table[i] = self._table[i], None
    return (None, None) if entry[0] == 'split' else value

  def key_at(self, path: Path) -> Any:
    """The concrete key at `path`, for a split this session served."""
    key = self._fetched.get(path)
    if key is None:
      level, i = self._plan.keys.where[path]
      with jax.ensure_compile_time_eval():
        key = self._fetched[path] = self._levels[level][i]
    return key

  def record(self, entry: Any, initializer: Optional[Callable[..., Any]]):
    """Notes a request of this call (served or not) for the next plan."""
    self._entries.append(entry)
    self._initializers.append(initializer)

  def finish(self) -> None:
    """Stores this call's requests as the plan of later calls.

    Requests equal to the current plan's confirm it (it is used from the
    next call on); others replace it.
    """
    self._table = None
    entries = tuple(self._entries)
    if not entries:
      return
    plan = self._plan
    if plan is not None and plan.entries == entries:
      plan.confirmed = True
    else:
      plan = _Plan(entries, tuple(self._initializers))
    _plans[self._key] = plan
    _plans.move_to_end(self._key)
    if len(_plans) > _MAX_PLANS:
      _plans.popitem(last=False)

  def close(self) -> None:
    """Drops the values that were not handed out."""
    self._table = None


def start(cls: type, name: Optional[str], rng: Any, args: Tuple[Any, ...],
          kwargs: Dict[str, Any], reuse: Any) -> Optional[Session]:
  """A session for `cls.init(rng, *args, name=name, **kwargs)`, or None.

  None for a traced rng: the parameters are traced, nothing to replay.
  """
  if is_tracer(rng):
    return None
  return Session(plan_key(cls, name, rng, args, kwargs, reuse), rng)


def plan_key(cls: type, name: Optional[str], rng: Any, args: Tuple[Any, ...],
             kwargs: Dict[str, Any], reuse: Any) -> Hashable:
  """What an `init` call's plan is filed under.

  The root module's class (by name: classes made by `partial` on every call
  share it), its name, the shapes and dtypes of array arguments and the
  values of plain ones, and the key's type. Only how often a plan fits
  depends on this: every request is checked against the plan's entries.
  """
  bound_name = cls._bound_name  # pylint: disable=protected-access
  return (cls.__module__, cls.__qualname__, name, bound_name,
          _abstract(rng, 0), _abstract(args, 0),
          _abstract(sorted(kwargs.items(), key=lambda kv: kv[0]), 0),
          None if reuse is None else jax.tree_util.tree_structure(reuse))


def _abstract(value: Any, depth: int) -> Hashable:
  """A hashable summary of an argument that keeps no reference to it."""
  if value is None or isinstance(value, (bool, int, float, complex, str)):
    return (type(value).__name__, repr(value))
  if hasattr(value, 'shape') and hasattr(value, 'dtype'):
    return ('array', tuple(value.shape), str(value.dtype))
  if depth < 4 and isinstance(value, (tuple, list)):
    return (type(value).__name__,
            tuple(_abstract(v, depth + 1) for v in value))
  if depth < 4 and isinstance(value, dict):
    return ('dict', tuple((repr(k), _abstract(v, depth + 1))
                          for k, v in value.items()))
  if isinstance(value, type):
    return ('class', value.__module__, value.__qualname__)
  return ('object', type(value).__module__, type(value).__qualname__,
          getattr(value, '__qualname__', None))
