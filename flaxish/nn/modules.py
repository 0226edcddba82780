"""`Module`: a layer is a class whose `apply` method is the whole computation.

Calling a Module class inside another module's `apply` runs its `apply` in a
child frame and returns the output (no instance escapes). Parameters are
nested plain dicts: a child's parameters live under its name.

    class MLP(nn.Module):
      def apply(self, x, hidden=64):
        x = nn.relu(nn.Dense(x, hidden))   # params['Dense_0']
        return nn.Dense(x, 1)              # params['Dense_1']

    y, params = MLP.init(jax.random.PRNGKey(0), x)
    y = MLP.call(params, x)
"""
import contextlib
import functools
import inspect
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type

import jax
import jax.numpy as jnp

from flaxish import jax_utils
from flaxish.nn import collection as collection_lib
from flaxish.nn import _param_init as param_init
from flaxish.nn import frame as frame_lib
from flaxish.nn import stochastic as stochastic_lib
from flaxish.nn.utils import CallStack, classproperty, is_tracer

__all__ = ['Module', 'module', 'module_method', 'capture_module_outputs']

ModuleFrame = frame_lib.ModuleFrame
_module_stack = frame_lib.module_stack
# Observers of module calls: objects with `on_output(frame, cls, y)`
# (capture_module_outputs, nn.tabulate).
output_trackers: CallStack[Any] = CallStack()


def _check_rng(rng: Any, where: str) -> None:
  dtype = getattr(rng, 'dtype', None)
  if dtype is None or not (jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
                           or dtype == jnp.uint32):
    raise TypeError(f'{where} expects a PRNG key (jax.random.PRNGKey(seed) '
                    f'or jax.random.key(seed)) as its first argument, got '
                    f'{type(rng).__name__} {getattr(rng, "dtype", "")}')


class Module:
  """Base class of all layers. Subclasses override `apply(self, *args, **kw)`.

  Class attributes set by `partial` / `shared` (not for users):
    _partial_kwargs: keyword arguments bound to `apply`.
    _bound_name: a fixed module name, or None.
    _shared_frame: the frame that owns a shared module's parameters.
  """
  _partial_kwargs: Dict[str, Any] = {}
  _bound_name: Optional[str] = None
  _shared_frame: Optional[ModuleFrame] = None
  _is_module_method = False

  def __new__(cls, *args, name: Optional[str] = None, **kwargs):
    parent = _module_stack.top()
    if parent is None:
      raise ValueError(
          f'{cls.__name__}(...) was called outside of a Module.apply. Use '
          f'{cls.__name__}.init(rng, ...), .init_by_shape(rng, specs), '
          f'.call(params, ...), or nn.Model(module, params)(...)')
    shared = cls._shared_frame is not None
    if shared:
      if name is not None:
        raise ValueError(f'the name of shared module "{cls._bound_name}" is '
                         'fixed by .shared(); do not pass name= to its calls')
      if not parent.is_descendant_of(cls._shared_frame):
        raise ValueError(
            f'shared module "{cls._bound_name}" is used outside the apply of '
            f'"{cls._shared_frame.path}" that declared it')
      parent = cls._shared_frame
    if name is None:
      name = cls._bound_name or parent.default_child_name(cls.__name__)
    frame_lib.check_name(name, f'module {parent.path}')
    frame = parent.child(name, shared)
    return cls._run(frame, args, {**cls._partial_kwargs, **kwargs})

  @classmethod
  def _run(cls, frame: ModuleFrame, args, kwargs) -> Any:
    instance = object.__new__(cls)
    instance._frame = frame
    with _module_stack.scope(frame), jax.named_scope(
        frame.name or cls.__name__):
      y = instance.apply(*args, **kwargs)
    for tracker in output_trackers:
      tracker.on_output(frame, cls, y)
    return y

  def apply(self, *args, **kwargs):
    """The computation of the layer; subclasses override it."""
    raise NotImplementedError(f'{type(self).__name__} must override apply()')

  # ---- parameters and state -------------------------------------------------

  def param(self, name: str, shape: Optional[Sequence[int]],
            initializer: Callable[..., Any]) -> Any:
    """Creates (at init) or reads (at apply) the parameter `name`.

    Arguments:
      name: the parameter's name in this module's params dict.
      shape: the expected shape; None allows any value (any pytree).
      initializer: `initializer(key, shape) -> value`, run only at init.
    Returns:
      The parameter value.
    """
    frame = self._frame
    frame_lib.check_name(name, f'module {frame.path}')
    path = frame.path.rstrip('/') + '/' + name
    if name in frame.param_names:
      raise ValueError(f'parameter "{path}" is defined twice: use a '
                       'different name for the second one')
    if name in frame.children:
      raise ValueError(f'"{path}" is a submodule; a parameter cannot have '
                       'the same name')
    frame.param_names.add(name)
    if frame.is_init and name not in frame.params:
      value = self._new_param(frame, name, path, shape, initializer)
      frame.params[name] = value
    else:
      if name not in frame.params:
        raise ValueError(
            f'parameter "{path}" is missing from the given params (module '
            f'"{frame.path}" has {sorted(frame.params)}); were the params '
            'made by another module?')
      value = frame.params[name]
      if shape is not None and jnp.shape(value) != tuple(shape):
        raise ValueError(
            f'parameter "{path}" has shape {jnp.shape(value)} in the params, '
            f'but the module asks for {tuple(shape)}: the input or the '
            'hyper-parameters differ from those used at init')
    return value

  @staticmethod
  def _new_param(frame, name, path, shape, initializer):
    reuse = frame.reuse
    if isinstance(reuse, dict) and name in reuse:
      value = reuse[name]
      if shape is not None and jnp.shape(value) != tuple(shape):
        raise ValueError(
            f'reused parameter "{path}" has shape {jnp.shape(value)}, but '
            f'the module creates it with shape {tuple(shape)}')
      frame.root.reused_paths.add(path)
      return value
    key = frame_lib.fold_in_name(frame.rng, name)
    value = param_init.initialize(initializer, key, shape)
    if shape is not None and jnp.shape(value) != tuple(shape):
      raise ValueError(
          f'the initializer of parameter "{path}" returned shape '
          f'{jnp.shape(value)}, expected {tuple(shape)}')
    return value

  def get_param(self, name: str) -> Any:
    """An existing parameter, or a child module's params dict."""
    frame = self._frame
    if name not in frame.params:
      raise ValueError(f'no parameter or submodule "{name}" in module '
                       f'"{frame.path}" (it has {sorted(frame.params)})')
    return frame.params[name]

  def state(self, name: str, shape: Optional[Sequence[int]] = None,
            initializer: Optional[Callable[..., Any]] = None,
            collection: Optional[collection_lib.Collection] = None
            ) -> collection_lib.ModuleState:
    """A state variable, read and written through `.value`.

    It lives in `collection`, by default the innermost `nn.stateful()`. The
    initializer runs (with a key split from the nearest initializing frame)
    only while initializing and only if the variable does not exist yet.
    """
    if collection is None:
      if not collection_lib.is_stateful():
        raise ValueError(
            f'module "{self._frame.path}" uses state "{name}" but no '
            'Collection is active: wrap the call in `with nn.stateful() as '
            'state:` (or `nn.stateful(state)`), or pass collection=')
      collection = collection_lib.get_state()
    state = collection_lib.ModuleState(collection, name)
    if initializer is not None and name not in collection.retrieve({}):
      frame = self._frame
      while frame is not None and not frame.is_init:
        frame = frame.parent
      if frame is not None:
        frame.rng, key = param_init.split(frame.rng)
        value = param_init.initialize(initializer, key, shape)
        state.value = value
    return state

  def is_stateful(self) -> bool:
    """True inside a `nn.stateful()` block."""
    return collection_lib.is_stateful()

  def is_initializing(self) -> bool:
    """True while this module is being initialized."""
    return self._frame.is_init

  @property
  def path(self) -> str:
    """This module's path, e.g. '/Dense_0'."""
    return self._frame.path

  # ---- class methods: building, initializing and applying --------------------

  @classmethod
  def partial(cls, *, name: Optional[str] = None, **kwargs) -> Type['Module']:
    """A subclass with `kwargs` bound (call-time kwargs override them)."""
    attrs = {'_partial_kwargs': {**cls._partial_kwargs, **kwargs},
             '__module__': cls.__module__, '__qualname__': cls.__qualname__,
             '__doc__': cls.__doc__}
    if name is not None:
      attrs['_bound_name'] = frame_lib.check_name(name, f'{cls.__name__}'
                                                  '.partial')
    return type(cls.__name__, (cls,), attrs)

  @classmethod
  def shared(cls, *, name: Optional[str] = None,
             **kwargs) -> Type['Module']:
    """A subclass whose every call reuses one set of parameters.

    Only valid inside an `apply`; the parameters live in that frame under
    `name` (default `ClassName_k`).
    """
    frame = _module_stack.top()
    if frame is None:
      raise ValueError(f'{cls.__name__}.shared() can only be used inside a '
                       'Module.apply')
    if name is None:
      name = cls._bound_name or frame.default_child_name(cls.__name__)
    frame_lib.check_name(name, f'{cls.__name__}.shared in {frame.path}')
    if name in frame.shared_names:
      raise ValueError(f'a shared module named "{name}" is already declared '
                       f'in "{frame.path}"')
    frame.shared_names.add(name)
    partial = cls.partial(**kwargs)
    partial._bound_name = name
    partial._shared_frame = frame
    return partial

  @classmethod
  def _root_frame(cls, name, params, rng, reuse) -> ModuleFrame:
    name = name if name is not None else cls._bound_name
    if name is not None:
      frame_lib.check_name(name, f'{cls.__name__} root')
    return ModuleFrame(name, None, params, rng, reuse)

  @classmethod
  def init(cls, _rng: Any, *args, name: Optional[str] = None,
           reuse_params: Optional[Dict[str, Any]] = None,
           **kwargs) -> Tuple[Any, Dict[str, Any]]:
    """Initializes the module on real inputs.

    Arguments:
      _rng: a PRNG key; parameter keys are derived from it by name.
      *args, **kwargs: the arguments of `apply`.
      name: the root module's name (default None).
      reuse_params: a partial params dict (transfer learning): parameters
        found there are taken as they are (shapes are checked), the rest are
        initialized. Entries that match no parameter are an error.
    Returns:
      `(output, params)`. With a concrete `_rng`, parameters are computed
      eagerly, so modules first called inside `lax.scan` bodies initialize
      fine; under `jit` with a traced `_rng` they cannot (initialize outside
      `jit`, or use `init_by_shape`).
    """
    _check_rng(_rng, f'{cls.__name__}.init')
    frame = cls._root_frame(name, {}, _rng, reuse_params)
    y = cls._run(frame, args, {**cls._partial_kwargs, **kwargs})
    if reuse_params is not None:
      _check_all_reused(cls, reuse_params, frame.reused_paths)
    return y, frame.params

  @classmethod
  def init_by_shape(cls, _rng: Any, input_specs: Sequence[Any], *args,
                    name: Optional[str] = None,
                    reuse_params: Optional[Dict[str, Any]] = None,
                    **kwargs) -> Tuple[Any, Dict[str, Any]]:
    """Initializes from input shapes only, without running the computation.

    Arguments:
      input_specs: one `(shape, dtype)` pair (or bare shape, float32) per
        leading positional input of `apply`; `*args` follow them.
    Returns:
      `(output, params)`: outputs that depend on the inputs are
      `jax.ShapeDtypeStruct`s; outputs computed without them and the params
      are concrete arrays.
    """
    _check_rng(_rng, f'{cls.__name__}.init_by_shape')
    if (not isinstance(input_specs, (list, tuple)) or
        jax_utils.is_shape(input_specs)):
      raise TypeError(f'{cls.__name__}.init_by_shape expects a list of input '
                      f'specs [(shape, dtype), ...], got {input_specs!r}')
    _check_arity(cls, len(input_specs) + len(args), kwargs)
    stochastic_rng = (stochastic_lib.make_rng()
                      if stochastic_lib.is_stochastic() else None)
    captured = {}

    def lazy_init(*inputs):
      # Under compile-time evaluation, everything computed without the
      # (abstract) inputs -- keys, initializers, make_rng() -- is concrete.
      with contextlib.ExitStack() as stack:
        stack.enter_context(jax.ensure_compile_time_eval())
        if stochastic_rng is not None:
          stack.enter_context(stochastic_lib.stochastic(stochastic_rng))
        y, params = cls.init(_rng, *inputs, *args, name=name,
                             reuse_params=reuse_params, **kwargs)
      captured['params'] = params
      return y

    if is_tracer(_rng):
      return _init_with_traced_rng(lazy_init, input_specs, captured)
    y = jax_utils.partial_eval_by_shape(lazy_init, input_specs)
    params = captured['params']
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
      if is_tracer(leaf):
        raise ValueError(
            f'parameter {jax.tree_util.keystr(path)} depends on the inputs '
            '(data-dependent initialization), so init_by_shape cannot '
            f'compute it: use {cls.__name__}.init(rng, inputs) instead')
    return y, params

  @classmethod
  def call(cls, params: Dict[str, Any], *args, name: Optional[str] = None,
           **kwargs) -> Any:
    """Applies the module with the given params."""
    if not isinstance(params, dict):
      raise TypeError(f'{cls.__name__}.call expects a params dict, got '
                      f'{type(params).__name__}')
    frame = cls._root_frame(name, params, None, None)
    return cls._run(frame, args, {**cls._partial_kwargs, **kwargs})

  @classmethod
  def create(cls, _rng: Any, *args, name: Optional[str] = None,
             **kwargs) -> Tuple[Any, 'Model']:
    """`init` plus wrapping the params in a `Model`: returns `(y, model)`."""
    y, params = cls.init(_rng, *args, name=name, **kwargs)
    return y, _make_model(cls, name, params)

  @classmethod
  def create_by_shape(cls, _rng: Any, input_specs: Sequence[Any], *args,
                      name: Optional[str] = None,
                      **kwargs) -> Tuple[Any, 'Model']:
    """`init_by_shape` plus wrapping in a `Model`: returns `(y, model)`."""
    y, params = cls.init_by_shape(_rng, input_specs, *args, name=name,
                                  **kwargs)
    return y, _make_model(cls, name, params)


def _init_with_traced_rng(lazy_init, input_specs, captured):
  """`init_by_shape` under jit/vmap/pmap of the rng (`pmap(create_model)`).

  The parameters depend on the traced rng, so they cannot come out of an
  abstract evaluation. The module runs on zero inputs instead; under `jit`
  its input-dependent outputs are unused, so XLA removes that computation.
  """
  structs = [jax_utils.parse_input_spec(s) for s in input_specs]
  zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                 structs)
  y = lazy_init(*zeros)
  y = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
      if is_tracer(x) else x, y)
  return y, captured['params']


def _make_model(cls, name, params):
  from flaxish.nn.model import Model  # pylint: disable=g-import-not-at-top
  return Model(cls.partial(name=name) if name is not None else cls, params)


def _check_arity(cls, num_positional: int, kwargs: Dict[str, Any]) -> None:
  """Raises if `apply` cannot take that many positional inputs."""
  signature = inspect.signature(cls.apply)
  try:
    signature.bind(None, *([None] * num_positional),
                   **{**cls._partial_kwargs, **kwargs})
  except TypeError as e:
    raise ValueError(
        f'{cls.__name__}.init_by_shape: {num_positional} positional inputs '
        f'(input specs + args) do not fit {cls.__name__}.apply{signature}: '
        f'{e}. Give one input spec per array input of apply') from None


def _check_all_reused(cls, reuse, used_paths) -> None:
  unused = []
  for path, _ in jax.tree_util.tree_leaves_with_path(reuse):
    key = '/' + '/'.join(str(getattr(p, 'key', p)) for p in path)
    if key not in used_paths:
      unused.append(key)
  if unused:
    raise ValueError(f'{cls.__name__}.init: reuse_params has entries that '
                     f'match no parameter of the module: {unused}')


def module(fun: Callable[..., Any]) -> Type[Module]:
  """Turns a function into a Module class whose `apply` is that function."""

  def apply(self, *args, **kwargs):  # pylint: disable=unused-argument
    return fun(*args, **kwargs)

  return type(fun.__name__, (Module,), {
      'apply': apply, '__module__': fun.__module__,
      '__qualname__': fun.__qualname__, '__doc__': fun.__doc__})


def module_method(fn: Callable[..., Any]) -> classproperty:
  """Decorates an extra method of a Module, e.g. `Embed.attend`.

  `Cls.method` is a Module subclass whose `apply` is `fn`: call it inside an
  apply (`SharedEmbed.attend(q)`), with `Cls.method.call(params, ...)`, or on a
  Model (`model.attend(q)`). Hyper-parameters must be passed again.
  """

  def get(cls):
    cache_name = f'_module_method_{fn.__name__}'
    cached = cls.__dict__.get(cache_name)
    if cached is None:
      cached = type(cls.__name__, (cls,), {
          'apply': fn, '_is_module_method': True,
          '__module__': cls.__module__,
          '__qualname__': f'{cls.__qualname__}.{fn.__name__}',
          '__doc__': fn.__doc__})
      setattr(cls, cache_name, cached)
    return cached

  prop = classproperty(get)
  prop.is_module_method = True
  functools.update_wrapper(prop, fn)
  return prop


class _OutputRecorder:

  def __init__(self, outputs: collection_lib.Collection):
    self.outputs = outputs

  def on_output(self, frame: ModuleFrame, cls, y: Any) -> None:
    del cls
    with _module_stack.scope(frame):
      self.outputs._append_output(y)


@contextlib.contextmanager
def capture_module_outputs():
  """Yields a Collection: module path -> tuple of the outputs it produced.

  Paths are relative to where the block is opened: '/' is a top-level
  module, '/Dense_0' its first Dense child.
  """
  with collection_lib.Collection().mutate() as outputs:
    with output_trackers.scope(_OutputRecorder(outputs)):
      yield outputs
