"""The LibCST transformer behind `python -m flaxish.upgrade`.

`upgrade_source(code)` returns `(new_code, counts, lints)`: the rewritten
source (comments and formatting kept), the number of rewrites per rule, and
`(line, message)` pairs for code that needs a hand edit.
"""
import collections

try:
  import libcst as cst
  from libcst import codemod
  from libcst.helpers import get_full_name_for_node
  from libcst.metadata import PositionProvider, QualifiedNameProvider
except ImportError as e:  # pragma: no cover - exercised only without libcst
  raise ImportError('flaxish.upgrade needs LibCST: '
                    "pip install 'flaxish[upgrade]' (or pip install libcst)") from e

from flaxish.upgrade.rules import (ARRAY_MAKERS, AT_METHODS, MODULES, NAMES,
                                   SHAPE_ARGS)

__all__ = ['Upgrade', 'upgrade_source']

_COMPAT = 'flaxish.upgrade.compat.'
# Names that no longer exist and whose every use a call rule rewrites.
_DROPPED = {'jax.ops.index', 'jax.random.shuffle', 'jax.lax.tie_in',
            *(f'jax.ops.{n}' for n in AT_METHODS)}
_EQ = cst.AssignEqual(cst.SimpleWhitespace(''), cst.SimpleWhitespace(''))
_ATOMS = (cst.Name, cst.Attribute, cst.Call, cst.Subscript)
_JIT_LINT = (
    'jax.jit static_argnums: today\'s jax.jit rejects unhashable static values '
    '(dict, list). Rewritten to flaxish.upgrade.compat.jit, which passes them '
    'by identity with a warning, as 2020 JAX did. To use jax.jit again, pass '
    'hashable values (a tuple instead of a list, tuple(sorted(d.items())) '
    'instead of a dict).')


def _rename_module(name):
  for old, new in MODULES.items():
    if name == old or name.startswith(old + '.'):
      return new + name[len(old):]
  return name


def _paren(expr):
  if isinstance(expr, _ATOMS) or expr.lpar:
    return expr
  return expr.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


_dotted = cst.parse_expression
_add_import = codemod.visitors.AddImportsVisitor.add_needed_import


class Upgrade(codemod.VisitorBasedCodemodCommand):
  """Rewrites 2020 Flax/JAX names to today's; collects lints."""
  METADATA_DEPENDENCIES = (QualifiedNameProvider, PositionProvider)

  def __init__(self, context):
    super().__init__(context)
    self.counts = collections.Counter()
    self.lints = []
    self.arrays = set()   # names assigned from jax.numpy/jax.random/... calls
    self.numpy = None     # the name numpy is imported under, if any

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

  def is_array(self, node):
    if isinstance(node, cst.Name):
      return node.value in self.arrays
    return (isinstance(node, cst.Call) and
            (self.qname(node.func) or '').startswith(ARRAY_MAKERS))

  def visit_Import(self, node):
    for alias in node.names:
      if get_full_name_for_node(alias.name) == 'numpy':
        self.numpy = alias.asname.name.value if alias.asname else 'numpy'
    return False

  def leave_Import(self, original_node, updated_node):
    names = []
    for alias in updated_node.names:
      old = get_full_name_for_node(alias.name)
      new = _rename_module(old)
      if new != old:
        self.counts['modules'] += 1
        alias = alias.with_changes(name=_dotted(new))
      names.append(alias)
    return updated_node.with_changes(names=names)

  def visit_ImportFrom(self, node):
    return False

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
      target = MODULES.get(qual) or NAMES.get(qual, (None, None))[1]
      if target and NAMES.get(qual, ('x',))[0] is not None:
        new_module, new_name = target.rsplit('.', 1)
        asname = alias.asname or (cst.AsName(cst.Name(name)) if new_name != name else None)
        new_alias = alias.with_changes(name=cst.Name(new_name), asname=asname)
      new_module = _rename_module(new_module)
      if (new_module, new_alias.name.value) != (module, name):
        self.counts['modules' if qual not in NAMES else NAMES[qual][0]] += 1
        changed = True
      groups.setdefault(new_module, []).append(new_alias)
    if not changed:
      return updated_node
    if not groups:
      return cst.RemoveFromParent()
    nodes = [updated_node.with_changes(module=_dotted(mod), names=aliases[:-1] + [
        aliases[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)])
             for mod, aliases in groups.items()]
    return nodes[0] if len(nodes) == 1 else cst.FlattenSentinel(nodes)

  def leave_SimpleStatementLine(self, original_node, updated_node):
    if len(original_node.body) == 1 and len(updated_node.body) > 1:
      lines = [cst.SimpleStatementLine([s.with_changes(semicolon=cst.MaybeSentinel.DEFAULT)])
               for s in updated_node.body]
      lines[0] = lines[0].with_changes(leading_lines=updated_node.leading_lines)
      return cst.FlattenSentinel(lines)
    return updated_node

  def leave_Name(self, original_node, updated_node):
    qual = self.qname(original_node) or ''
    if updated_node.value == 'flax' and (qual == 'flax' or qual.startswith('flax.')):
      return updated_node.with_changes(value='flaxish')
    return updated_node

  def leave_Attribute(self, original_node, updated_node):
    qual = self.qname(original_node)
    if qual in MODULES:
      self.counts['modules'] += 1
      return self.expr_for(original_node, MODULES[qual])
    rule, target = NAMES.get(qual, (None, None))
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
      return self.clip(updated_node, args, kw)
    if qual == 'jax.random.shuffle':
      self.counts['random_shuffle'] += 1
      args[-1] = args[-1].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(' ')))
      return updated_node.with_changes(
          func=self.expr_for(original_node.func, 'jax.random.permutation'),
          args=args + [cst.Arg(cst.Name('True'), keyword=cst.Name('independent'), equal=_EQ)])
    if qual == 'jax.lax.tie_in' and len(args) == 2:
      self.counts['tie_in'] += 1
      return _paren(args[1].value)
    if qual == 'jax.jit' and 'static_argnums' in kw:
      self.lint(original_node, _JIT_LINT)
      self.counts['jit_static_argnums'] += 1
      return updated_node.with_changes(func=self.expr_for(original_node.func, _COMPAT + 'jit'))
    if (qual == 'functools.partial' and 'static_argnums' in kw and args
        and self.qname(original_node.args[0].value) == 'jax.jit'):
      self.lint(original_node, _JIT_LINT)
      self.counts['jit_static_argnums'] += 1
      args[0] = args[0].with_changes(value=self.expr_for(original_node.args[0].value, _COMPAT + 'jit'))
      return updated_node.with_changes(args=args)
    if qual in SHAPE_ARGS:
      return self.shape_arg(original_node, updated_node, *SHAPE_ARGS[qual])
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
                f'x.at[idx].{method}(y) by hand (positional x, idx, y expected).')
      return updated_node
    self.counts['index_ops'] += 1
    idx = original_node.args[1].value
    if isinstance(idx, cst.Subscript) and self.qname(idx.value) == 'jax.ops.index':
      self.counts['index_exp'] -= 1  # unwrapped here, not rewritten
      slices = args[1].value.slice
    else:
      slices = [cst.SubscriptElement(cst.Index(args[1].value))]
    at = cst.Subscript(cst.Attribute(_paren(args[0].value), cst.Name('at')), slices)
    rest = [args[2]] + list(args[3:])
    rest[-1] = rest[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
    return cst.Call(cst.Attribute(at, cst.Name(method)), rest,
                    lpar=updated_node.lpar, rpar=updated_node.rpar)

  def clip(self, updated_node, args, kw):
    renames = {'a_min': 'min', 'a_max': 'max'}
    changed = False
    for i, a in enumerate(args):
      if a.keyword and a.keyword.value in renames:
        args[i] = a.with_changes(keyword=cst.Name(renames[a.keyword.value]))
        changed = True
    if 'a' in kw:
      first = args.pop(kw['a'])
      args.insert(0, first.with_changes(keyword=None, equal=cst.MaybeSentinel.DEFAULT,
                                        comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(' '))))
      args[-1] = args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
      changed = True
    if changed:
      self.counts['clip_keywords'] += 1
    return updated_node.with_changes(args=args)

  def shape_arg(self, original_node, updated_node, pos, keyword):
    found = [(i, a) for i, a in enumerate(original_node.args)
             if (a.keyword and a.keyword.value == keyword) or (i == pos and not a.keyword)]
    if not found:
      return updated_node
    i, arg = found[0]
    value = arg.value
    if not (isinstance(value, cst.Call) and
            self.qname(value.func) in ('jax.numpy.array', 'jax.numpy.asarray')):
      return updated_node
    inner = updated_node.args[i].value.args
    if len(inner) == 1 and isinstance(inner[0].value, (cst.List, cst.Tuple)):
      self.counts['shape_literal'] += 1
      args = list(updated_node.args)
      args[i] = args[i].with_changes(value=inner[0].value)
      return updated_node.with_changes(args=args)
    self.lint(original_node, f'`{keyword}` is a jnp.array: under jit it is a '
              'tracer, not a static shape. Pass a tuple of Python ints (or '
              'np.array(...)) instead.')
    return updated_node

  def visit_Assign(self, node):
    if len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name):
      name = node.targets[0].target.value
      (self.arrays.add if self.is_array(node.value) else self.arrays.discard)(name)

  def visit_For(self, node):
    self.check_iter(node.iter)

  def visit_CompFor(self, node):
    self.check_iter(node.iter)

  def check_iter(self, it):
    if self.is_array(it):
      code = cst.Module([]).code_for_node(it)
      self.lint(it, f'iterating over the jax.Array `{code}` yields 0-d '
                'jax.Arrays, not NumPy scalars: iterate over '
                f'np.asarray({code}) (or {code}.tolist()) if the loop needs '
                'NumPy or Python values.')


def upgrade_source(code):
  """Upgrades one module's source: returns (new_code, counts, lints)."""
  command = Upgrade(codemod.CodemodContext())
  new = command.transform_module(cst.parse_module(code)).code
  return new, +command.counts, sorted(command.lints)
