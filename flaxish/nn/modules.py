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
import difflib
import functools
import inspect
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type

import jax
import jax.numpy as jnp

from flaxish import jax_utils
from flaxish import struct
from flaxish import traverse_util
from flaxish.nn import collection as collection_lib
from flaxish.nn import frame as frame_lib
from flaxish.nn import stochastic as stochastic_lib
from flaxish.nn._util import CallStack, classproperty, is_tracer

__all__ = ['Module', 'Model', 'module', 'module_method',
           'capture_module_outputs', 'TransparentModule', 'TruncatedModule',
           'truncated_module', 'MODULE_CLASSMETHODS']

MODULE_CLASSMETHODS = ['create', 'create_by_shape', 'init', 'init_by_shape',
                       'call', 'partial']

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

  `partial` / `shared` make subclasses with bound keyword arguments
  (`_partial_kwargs`), a fixed name (`_bound_name`) and, for shared modules,
  the frame that owns their parameters (`_shared_frame`).
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
    frame.transparent = cls._is_transparent()
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
      value = _new_param(frame, name, path, shape, initializer)
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
        state.value = frame.init_state(initializer, shape)
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
    _check_kwargs(cls, kwargs, f'{cls.__name__}.partial')
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
    return ModuleFrame(name, None, params, rng, reuse,
                       transparent=cls._is_transparent())

  # Transparent modules (2020): their single child, named '0', takes their
  # place in module paths and in the params dict.
  @classmethod
  def _is_transparent(cls) -> bool:
    return False

  @classmethod
  def _pre_process_params(cls, params: Dict[str, Any]) -> Dict[str, Any]:
    return params

  @classmethod
  def _post_process_params(cls, params: Dict[str, Any]) -> Dict[str, Any]:
    return params

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
      `(output, params)`. Parameters are made in the trace of `_rng`: with a
      concrete `_rng` they are concrete arrays, even for modules first called
      inside `lax.scan`, `jax.checkpoint` or `lax.cond`.
    """
    _check_rng(_rng, f'{cls.__name__}.init')
    _check_kwargs(cls, kwargs, f'{cls.__name__}.init')
    frame = cls._root_frame(name, {}, _rng, reuse_params)
    y = cls._run(frame, args, {**cls._partial_kwargs, **kwargs})
    frame.finish_init()
    if reuse_params is not None:
      _check_all_reused(cls, reuse_params, frame.reused_paths)
    return y, cls._post_process_params(frame.params)

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
        (input_specs and jax_utils.is_shape(input_specs))):
      raise TypeError(f'{cls.__name__}.init_by_shape expects a list of input '
                      f'specs [(shape, dtype), ...], got {input_specs!r}')
    _check_kwargs(cls, kwargs, f'{cls.__name__}.init_by_shape')
    _check_arity(cls, len(input_specs) + len(args), kwargs)
    input_specs = [jax_utils.parse_input_spec(s) for s in input_specs]
    for i, spec in enumerate(input_specs):
      for leaf in jax.tree_util.tree_leaves(spec):
        if any(d < 0 for d in leaf.shape):
          raise ValueError(f'{cls.__name__}.init_by_shape: input spec {i} has '
                           f'shape {tuple(leaf.shape)}, with a negative '
                           'dimension; give the sizes of a real input')
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
            f'parameter {traverse_util.path_str(path)} depends on the inputs '
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
    _check_kwargs(cls, kwargs, f'{cls.__name__}.call')
    frame = cls._root_frame(name, cls._pre_process_params(params), None, None)
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


def _new_param(frame, name, path, shape, initializer):
  reuse = frame.reuse
  if isinstance(reuse, dict) and name in reuse:
    value = reuse[name]
    if shape is not None and jnp.shape(value) != tuple(shape):
      raise ValueError(
          f'reused parameter "{path}" has shape {jnp.shape(value)}, but '
          f'the module creates it with shape {tuple(shape)}')
    frame.reused_paths.add(path)
    return value
  value = frame.init_param(name, initializer, shape)
  if shape is not None and jnp.shape(value) != tuple(shape):
    raise ValueError(
        f'the initializer of parameter "{path}" returned shape '
        f'{jnp.shape(value)}, expected {tuple(shape)}')
  return value


def _init_with_traced_rng(lazy_init, input_specs, captured):
  """`init_by_shape` under jit/vmap/pmap of the rng (`pmap(create_model)`):
  the module runs on zeros (under `jit`, XLA drops the unused outputs)."""
  zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                 input_specs)
  y = lazy_init(*zeros)
  y = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
      if is_tracer(x) else x, y)
  return y, captured['params']


def _make_model(cls, name, params):
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


@functools.lru_cache(maxsize=None)
def _keyword_names(apply_fn: Callable[..., Any]) -> Optional[Tuple[str, ...]]:
  """The keyword names `apply_fn` takes, or None if it takes **kwargs."""
  params = list(inspect.signature(apply_fn).parameters.values())[1:]
  if any(p.kind is p.VAR_KEYWORD for p in params):
    return None
  return tuple(p.name for p in params if p.kind in (
      p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _check_kwargs(cls, kwargs: Dict[str, Any], where: str) -> None:
  """Raises a TypeError naming keyword arguments `apply` does not take."""
  known = _keyword_names(cls.apply)
  unknown = [k for k in kwargs if known is not None and k not in known]
  if unknown:
    hints = []
    for k in unknown:
      close = difflib.get_close_matches(k, known, n=1)
      hints.append(f'"{k}"' + (f' (did you mean "{close[0]}"?)' if close
                               else ''))
    raise TypeError(f'{where}: {cls.__name__}.apply has no argument '
                    f'{", ".join(hints)}; it takes {list(known)}')


def _check_all_reused(cls, reuse, used_paths) -> None:
  unused = [traverse_util.path_str(path) for path, _ in
            jax.tree_util.tree_leaves_with_path(reuse)]
  unused = [path for path in unused if path not in used_paths]
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
      self.outputs.store(self.outputs.retrieve(default=[]) + [y])


@contextlib.contextmanager
def capture_module_outputs():
  """Yields a Collection: module path -> list of the outputs it produced.

  Paths are relative to where the block is opened: '/' is a top-level
  module, '/Dense_0' its first Dense child.
  """
  with collection_lib.Collection().mutate() as outputs:
    with output_trackers.scope(_OutputRecorder(outputs)):
      yield outputs


class TransparentModule(Module):
  """A module whose single child, named '0', takes its place (2020).

  The child's parameters are the transparent module's parameters, and the
  child's submodules have the transparent module's path.
  """

  @classmethod
  def _is_transparent(cls) -> bool:
    return True

  @classmethod
  def _pre_process_params(cls, params: Dict[str, Any]) -> Dict[str, Any]:
    return {'0': params}

  @classmethod
  def _post_process_params(cls, params: Dict[str, Any]) -> Dict[str, Any]:
    if list(params) != ['0']:
      raise ValueError(f'{cls.__name__} is transparent: it must call exactly '
                       f"one child, named '0'; it made {sorted(params)}")
    return params['0']


class TruncatedModule(TransparentModule):
  """Runs `wrapped_module` and returns the outputs of the modules at
  `truncate_path` instead of its own (see `Model.truncate_at`)."""

  def apply(self, *args, wrapped_module=None, truncate_path=None, **kwargs):
    """Returns `truncate_path` with each path replaced by the list of the
    outputs of the module at that path ('/' is the wrapped module)."""
    if wrapped_module is None or truncate_path is None:
      raise ValueError('TruncatedModule needs the keyword arguments '
                       'wrapped_module= and truncate_path=')
    paths = jax.tree_util.tree_leaves(truncate_path)
    for path in paths:
      if not isinstance(path, str) or not path.startswith('/'):
        raise ValueError(f'truncate_at expects module paths like '
                         f'"/Dense_0", got {path!r}')
    with capture_module_outputs() as outputs:
      wrapped_module(*args, name='0', **kwargs)
    missing = [p for p in paths if p not in outputs]
    if missing:
      raise ValueError(f'truncate_at: no module at {missing}; the module '
                       f'paths are {sorted(outputs.state)}')
    return jax.tree_util.tree_map(lambda p: outputs[p], truncate_path)


def truncated_module(module: Type[Module], module_path: Any) -> Type[Module]:
  """`module` truncated at `module_path` (a path or a pytree of paths)."""
  return TruncatedModule.partial(wrapped_module=module,
                                 truncate_path=module_path)


@struct.dataclass
class Model:
  """A Module class with its params, as a pytree.

      model = nn.Model(MLP, params)
      y = model(x)                      # MLP.call(params, x)
      grads = jax.grad(loss)(model)     # a Model of gradients

  Attributes:
    module: the Module class (static: part of the tree structure).
    params: the nested params dict (the leaves).
  """
  module: Type[Module] = struct.field(pytree_node=False)
  params: Any

  __hash__ = object.__hash__

  def __call__(self, *args, **kwargs) -> Any:
    return self.module.call(self.params, *args, **kwargs)

  def __getattr__(self, name: str) -> Any:
    if name.startswith('__') or 'module' not in self.__dict__:
      raise AttributeError(name)
    value = getattr(self.module, name, None)
    if isinstance(value, type) and getattr(value, '_is_module_method', False):
      return lambda *args, **kwargs: value.call(self.params, *args, **kwargs)
    methods = sorted(
        n for c in self.module.__mro__ for n, v in vars(c).items()
        if getattr(v, 'is_module_method', False))
    raise AttributeError(
        f'Model of {self.module.__name__} has no attribute or module_method '
        f'"{name}" (its module methods: {methods})')

  def truncate_at(self, module_path: Any) -> 'Model':
    """A Model whose call returns the outputs of the given submodules.

    Arguments:
      module_path: a path like '/Dense_0' ('/' is the whole module), or a
        pytree of paths.
    Returns:
      A Model whose call returns `module_path` with each path replaced by the
      list of outputs of that module (one per call), as in 2020.
    """
    return self.replace(module=truncated_module(self.module, module_path))
