"""The LibCST transformer behind `python -m flaxish.upgrade`.

Table keys are fully qualified names as the code imports them; LibCST
resolves `import jax.numpy as jnp`, `from jax import tree_map` and aliases.
"""
import collections
import re

try:
  import libcst as cst
  from libcst import codemod
  from libcst import matchers
  from libcst.helpers import get_full_name_for_node
  from libcst.metadata import PositionProvider, QualifiedNameProvider
except ImportError as e:  # pragma: no cover - exercised only without libcst
  raise ImportError('flaxish.upgrade needs LibCST: pip install '
                    "'flaxish[upgrade]' (or pip install libcst)") from e

__all__ = ['Upgrade', 'upgrade_source', 'MODULES', 'NAMES', 'AT_METHODS',
           'SHAPE_ARGS', 'ARRAY_MAKERS', 'NUMPY_ON_JAX']

# Renamed modules: every import form and every `module.attr` use.
MODULES = {'flax': 'flaxish',
           'jax.experimental.optimizers': 'jax.example_libraries.optimizers',
           'jax.experimental.stax': 'jax.example_libraries.stax'}

# Renamed functions and types: old -> (rule, new). Rule None: calls only.
_TREE = ('tree_map', 'tree_leaves', 'tree_flatten', 'tree_unflatten',
         'tree_structure')
NAMES = {
    **{f'jax.{n}': ('tree_util', f'jax.tree_util.{n}') for n in _TREE},
    'jax.tree_multimap': ('tree_util', 'jax.tree_util.tree_map'),
    **{f'{m}.DeviceArray': ('device_array', 'jax.Array')
       for m in ('jax.numpy', 'jax.xla', 'jax.interpreters.xla')},
    'jax.ops.index': ('index_exp', 'jax.numpy.index_exp'),
    'jax.host_id': ('process_index', 'jax.process_index'),
    'jax.host_count': ('process_index', 'jax.process_count'),
    **{f'jax.test_util.{n}': ('test_util', f'flaxish.upgrade.compat.{n}')
       for n in ('JaxTestCase', 'check_eq', 'check_close')},
    'jax.jit': (None, 'flaxish.upgrade.compat.jit'),  # with static_argnums
    **{f'flax.training.common_utils.{n}': ('common_utils', f'jax.lax.{n}')
       for n in ('pmean', 'psum')},
}

# jax.ops.index_<op>(x, idx, y) -> x.at[idx].<method>(y).
AT_METHODS = {'index_update': 'set', 'index_add': 'add',
              'index_mul': 'multiply', 'index_min': 'min', 'index_max': 'max'}

# Arguments that must be static shapes: function -> (position, keyword).
SHAPE_ARGS = {
    'jax.lax.dynamic_slice': (2, 'slice_sizes'),
    'jax.numpy.pad': (1, 'pad_width'),
    **{f'jax.numpy.{n}': (0, 'shape')
       for n in ('zeros', 'ones', 'empty', 'full')},
    'jax.numpy.reshape': (1, 'newshape'),
    'jax.numpy.broadcast_to': (1, 'shape'),
    'jax.lax.broadcast': (1, 'sizes'), 'jax.lax.reshape': (1, 'new_sizes'),
}

# Calls whose result is a jax.Array.
ARRAY_MAKERS = ('jax.numpy.', 'jax.random.', 'jax.lax.', 'jax.nn.')

# NumPy functions that fail on a list of tracers: name -> stack it first.
NUMPY_ON_JAX = {**dict.fromkeys(('sum', 'mean', 'prod', 'max', 'min'), True),
                'stack': False, 'concatenate': False}

_COMPAT = 'flaxish.upgrade.compat.'
# Names that no longer exist and whose every use a call rule rewrites.
_DROPPED = {'jax.ops.index', 'jax.random.shuffle', 'jax.lax.tie_in',
            *(f'jax.ops.{n}' for n in AT_METHODS)}
_COMMA = cst.Comma(whitespace_after=cst.SimpleWhitespace(' '))
_EQ = cst.AssignEqual(cst.SimpleWhitespace(''), cst.SimpleWhitespace(''))
_DEFAULT = cst.MaybeSentinel.DEFAULT
_JIT_LINT = (
    "jax.jit static_argnums: today's jax.jit rejects unhashable static "
    'values (dict, list); rewritten to flaxish.upgrade.compat.jit, which '
    'passes them by identity with a warning. To use jax.jit, pass hashable '
    'values (a tuple, tuple(sorted(d.items()))).')
_dotted = cst.parse_expression
_add_import = codemod.visitors.AddImportsVisitor.add_needed_import


def _code(node):
  return cst.Module([]).code_for_node(node)


def _rename_module(name):
  for old, new in MODULES.items():
    if name == old or name.startswith(old + '.'):
      return new + name[len(old):]
  return name


def _rule(qual):
  """`(rule, new qualified name)` of a renamed module or name; rule None if
  calls only or not renamed."""
  return (('modules', MODULES[qual]) if qual in MODULES else
          NAMES.get(qual, (None, None)))


def _paren(expr):
  if expr.lpar or isinstance(
      expr, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)):
    return expr
  return expr.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


class Upgrade(codemod.VisitorBasedCodemodCommand):
  """Rewrites 2020 Flax/JAX names to today's; collects lints."""
  METADATA_DEPENDENCIES = (QualifiedNameProvider, PositionProvider)

  def __init__(self, context):
    super().__init__(context)
    self.counts, self.lints = collections.Counter(), []
    self.arrays = set()  # names assigned from an ARRAY_MAKERS call
    self.numpy = self.jnp = None  # local names of numpy and jax.numpy

  def qname(self, node):
    names = self.get_metadata(QualifiedNameProvider, node, set())
    return next(iter(names)).name if len(names) == 1 else None

  def lint(self, node, message):
    line = self.get_metadata(PositionProvider, node).start.line
    self.lints.append((line, message))

  def expr_for(self, original, target):
    """An expression for qualified `target`, reusing `original`'s alias."""
    if target.startswith(_COMPAT):
      _add_import(self.context, 'flaxish.upgrade', 'compat')
      return _dotted('compat.' + target[len(_COMPAT):])
    src = get_full_name_for_node(original).split('.')
    qual = self.qname(original).split('.')
    prefix = '.'.join(qual[:len(qual) - len(src) + 1])
    if target.startswith(prefix + '.'):
      return _dotted(src[0] + target[len(prefix):])
    _add_import(self.context, target.split('.')[0])
    return _dotted(target)

  def makes_array(self, call):
    return (self.qname(call.func) or '').startswith(ARRAY_MAKERS)

  def is_array(self, node):
    if isinstance(node, cst.Name):
      return node.value in self.arrays
    return isinstance(node, cst.Call) and self.makes_array(node)

  def visit_Import(self, node):
    for alias in node.names:
      name = get_full_name_for_node(alias.name)
      local = alias.asname.name.value if alias.asname else name
      if name == 'numpy':
        self.numpy = local
      elif name == 'jax.numpy':
        self.jnp = local
    return False

  def leave_Import(self, original_node, updated_node):
    names = []
    for alias in updated_node.names:
      old = get_full_name_for_node(alias.name)
      self.counts['modules'] += _rename_module(old) != old
      names.append(alias.with_changes(name=_dotted(_rename_module(old))))
    return updated_node.with_changes(names=names)

  def leave_ImportFrom(self, original_node, updated_node):
    if updated_node.relative or updated_node.module is None:
      return updated_node
    module = get_full_name_for_node(updated_node.module)
    if isinstance(updated_node.names, cst.ImportStar):
      return updated_node.with_changes(module=_dotted(_rename_module(module)))
    groups, changed = {}, False
    for alias in updated_node.names:
      name = alias.name.value
      qual, new_module, new_alias = f'{module}.{name}', module, alias
      if qual in _DROPPED:
        self.counts['imports_dropped'] += 1
        changed = True
        continue
      rule, target = _rule(qual)
      if rule is not None:
        new_module, new_name = target.rsplit('.', 1)
        asname = alias.asname or (
            cst.AsName(cst.Name(name)) if new_name != name else None)
        new_alias = alias.with_changes(name=cst.Name(new_name), asname=asname)
      new_module = _rename_module(new_module)
      if (new_module, new_alias.name.value) != (module, name):
        self.counts[rule or 'modules'] += 1
        changed = True
      groups.setdefault(new_module, []).append(new_alias)
    if not (changed and groups):
      return cst.RemoveFromParent() if changed else updated_node
    nodes = [updated_node.with_changes(module=_dotted(mod), names=[
        *aliases[:-1], aliases[-1].with_changes(comma=_DEFAULT)])
             for mod, aliases in groups.items()]
    return nodes[0] if len(nodes) == 1 else cst.FlattenSentinel(nodes)

  def leave_SimpleStatementLine(self, original_node, updated_node):
    if len(original_node.body) == 1 and len(updated_node.body) > 1:
      return cst.FlattenSentinel([cst.SimpleStatementLine(
          [s.with_changes(semicolon=_DEFAULT)],
          leading_lines=updated_node.leading_lines if i == 0 else ())
                                  for i, s in enumerate(updated_node.body)])
    return updated_node

  def leave_Name(self, original_node, updated_node):
    if (updated_node.value == 'flax' and
        (self.qname(original_node) or '').split('.')[0] == 'flax'):
      return updated_node.with_changes(value='flaxish')
    return updated_node

  def leave_Attribute(self, original_node, updated_node):
    rule, target = _rule(self.qname(original_node))
    if rule is None:
      return updated_node
    self.counts[rule] += 1
    return self.expr_for(original_node, target).with_changes(
        lpar=updated_node.lpar, rpar=updated_node.rpar)

  def leave_Call(self, original_node, updated_node):
    qual = self.qname(original_node.func) or ''
    args = list(updated_node.args)
    kw = {a.keyword.value: i for i, a in enumerate(args) if a.keyword}
    if qual.startswith('jax.ops.') and qual[8:] in AT_METHODS:
      return self.index_op(original_node, updated_node, AT_METHODS[qual[8:]])
    if qual == 'jax.numpy.clip':
      new = [a.with_changes(keyword=cst.Name(a.keyword.value[2:]))
             if a.keyword and a.keyword.value in ('a_min', 'a_max') else a
             for a in args]
      if 'a' in kw:  # arr is positional-only today
        new.insert(0, new.pop(kw['a']).with_changes(
            keyword=None, equal=_DEFAULT, comma=_COMMA))
        new[-1] = new[-1].with_changes(comma=_DEFAULT)
      self.counts['clip_keywords'] += new != args
      return updated_node.with_changes(args=new)
    if qual == 'jax.random.shuffle':
      self.counts['random_shuffle'] += 1
      args[-1] = args[-1].with_changes(comma=_COMMA)
      independent = cst.Arg(cst.Name('True'), keyword=cst.Name('independent'),
                            equal=_EQ)
      return updated_node.with_changes(
          func=self.expr_for(original_node.func, 'jax.random.permutation'),
          args=args + [independent])
    if _rule(qual)[0] == 'common_utils' and len(args) == 1:
      return updated_node.with_changes(args=[  # axis_name='batch'
          args[0].with_changes(comma=_COMMA),
          cst.Arg(cst.SimpleString("'batch'"))])
    if qual == 'jax.lax.tie_in' and len(args) == 2:
      self.counts['tie_in'] += 1
      return _paren(args[1].value)
    partial_of = (qual == 'functools.partial' and args and
                  self.qname(original_node.args[0].value))
    if 'static_argnums' in kw and 'jax.jit' in (qual, partial_of):
      self.lint(original_node, _JIT_LINT)
      self.counts['jit_static_argnums'] += 1
      if qual == 'jax.jit':
        return updated_node.with_changes(
            func=self.expr_for(original_node.func, _COMPAT + 'jit'))
      args[0] = args[0].with_changes(value=self.expr_for(
          original_node.args[0].value, _COMPAT + 'jit'))
      return updated_node.with_changes(args=args)
    if qual in SHAPE_ARGS:
      return self.shape_arg(original_node, updated_node, *SHAPE_ARGS[qual])
    if qual.startswith('numpy.') and qual[6:] in NUMPY_ON_JAX:
      return self.numpy_on_jax(original_node, updated_node, qual[6:])
    func = original_node.func
    if (isinstance(func, cst.Attribute) and func.attr.value == 'copy'
        and not original_node.args and self.is_array(func.value)):
      self.counts['array_copy'] += 1
      if self.numpy is None:
        _add_import(self.context, 'numpy')
      return cst.Call(_dotted(f'{self.numpy or "numpy"}.array'),
                      [cst.Arg(updated_node.func.value)])
    return updated_node

  def index_op(self, original_node, updated_node, method):
    args = updated_node.args
    if len(args) < 3 or any(a.keyword or a.star for a in args[:3]):
      self.lint(original_node, 'jax.ops.index_* was removed: rewrite as '
                f'x.at[idx].{method}(y) by hand (positional x, idx, y '
                'expected).')
      return updated_node
    self.counts['index_ops'] += 1
    idx = original_node.args[1].value
    if (isinstance(idx, cst.Subscript) and
        self.qname(idx.value) == 'jax.ops.index'):
      if isinstance(idx.value, cst.Attribute):  # counted by leave_Attribute
        self.counts['index_exp'] -= 1  # unwrapped here, not rewritten
      slices = args[1].value.slice
    else:
      slices = [cst.SubscriptElement(cst.Index(args[1].value))]
    at = cst.Subscript(
        cst.Attribute(_paren(args[0].value), cst.Name('at')), slices)
    rest = [*args[2:-1], args[-1].with_changes(comma=_DEFAULT)]
    return cst.Call(cst.Attribute(at, cst.Name(method)), rest,
                    lpar=updated_node.lpar, rpar=updated_node.rpar)

  def numpy_on_jax(self, original_node, updated_node, name):
    """`np.sum([jnp...])` -> `jnp.sum(jnp.stack([...]))`; `np.stack` too."""
    arg = original_node.args[0] if original_node.args else None
    seq = arg and not (arg.keyword or arg.star) and arg.value
    if isinstance(seq, (cst.ListComp, cst.GeneratorExp)):
      seq = seq.elt  # the elements
    elif not isinstance(seq, (cst.List, cst.Tuple)):
      return updated_node
    if not any(map(self.makes_array, matchers.findall(seq, matchers.Call()))):
      return updated_node
    self.counts['numpy_on_jax_values'] += 1
    if self.jnp is None:
      _add_import(self.context, 'jax')
    jnp = self.jnp or 'jax.numpy'
    value = updated_node.args[0].value
    if isinstance(value, cst.GeneratorExp):  # jnp.stack needs a sequence
      value = cst.ListComp(value.elt, value.for_in)
    if NUMPY_ON_JAX[name]:
      value = cst.Call(_dotted(f'{jnp}.stack'), [cst.Arg(value)])
    args = [updated_node.args[0].with_changes(value=value),
            *updated_node.args[1:]]
    return updated_node.with_changes(func=_dotted(f'{jnp}.{name}'), args=args)

  def shape_arg(self, original_node, updated_node, pos, keyword):
    for i, arg in enumerate(original_node.args):
      if ((arg.keyword.value == keyword if arg.keyword else i == pos) and
          isinstance(arg.value, cst.Call) and self.qname(arg.value.func) in
          ('jax.numpy.array', 'jax.numpy.asarray')):
        args, inner = list(updated_node.args), updated_node.args[i].value.args
        if (len(inner) == 1 and
            isinstance(inner[0].value, (cst.List, cst.Tuple))):
          self.counts['shape_literal'] += 1
          args[i] = args[i].with_changes(value=inner[0].value)
          return updated_node.with_changes(args=args)
        self.lint(original_node, f'`{keyword}` is a jnp.array: under jit it '
                  'is a tracer, not a static shape. Pass a tuple of Python '
                  'ints (or np.array(...)) instead.')
    return updated_node

  def leave_Assign(self, original_node, updated_node):
    target = _code(original_node.targets[0].target)
    if '.options().' not in target:
      return updated_node
    perf_only = re.search(r'\.options\(\)\.(experimental_)?threading\.\w+$',
                          target)
    self.lint(original_node, f"`{target} = ...` changes a copy: today's "
              'tf.data raises. Set it on `options = tf.data.Options()`, then '
              '`ds = ds.with_options(options)`' +
              (' (removed: a threading option, performance only).'
               if perf_only else '.'))
    self.counts['tf_data_threading'] += bool(perf_only)
    return cst.RemoveFromParent() if perf_only else updated_node

  def visit_Assign(self, node):
    if len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name):
      name = node.targets[0].target.value
      (self.arrays.add if self.is_array(node.value) else
       self.arrays.discard)(name)

  def visit_For(self, node):
    if self.is_array(node.iter):
      code = _code(node.iter)
      self.lint(node.iter, f'iterating over the jax.Array `{code}` yields '
                '0-d jax.Arrays, not NumPy scalars: iterate over '
                f'np.asarray({code}) (or {code}.tolist()) if the loop needs '
                'NumPy or Python values.')

  visit_CompFor = visit_For


def upgrade_source(code):
  """Upgrades one module's source (comments and formatting kept).

  Returns `(new_code, {rule: rewrites}, [(line, instruction), ...])`.
  """
  command = Upgrade(codemod.CodemodContext())
  new = command.transform_module(cst.parse_module(code)).code
  return new, +command.counts, sorted(command.lints)
