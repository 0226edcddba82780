"""Tests of flaxish.nn.modules: Module, partial, shared, init, call, names."""
import hashlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import nn
from tests.nn._helpers import MLP, Affine


def _fold(key, name):
  """Independent SHA-1 name hash (reference 1.1)."""
  h = int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], 'big')
  return jax.random.fold_in(key, h)


X = jnp.arange(15, dtype=jnp.float32).reshape(3, 5) / 10


def test_init_and_call_give_the_same_output():
  y, params = MLP.init(jax.random.PRNGKey(0), X)
  assert jax.tree_util.tree_map(jnp.shape, params) == {
      'Affine_0': {'kernel': (5, 4), 'bias': (4,)},
      'Affine_1': {'kernel': (4, 2), 'bias': (2,)}}
  np.testing.assert_allclose(MLP.call(params, X), y, rtol=1e-6)
  p = params
  expected = np.tanh(X @ p['Affine_0']['kernel'] + p['Affine_0']['bias'])
  expected = expected @ p['Affine_1']['kernel'] + p['Affine_1']['bias']
  np.testing.assert_allclose(y, expected, rtol=1e-5)


def test_rng_derivation_follows_sha1_of_names():
  rng = jax.random.PRNGKey(42)
  _, params = MLP.init(rng, X)
  kernel_key = _fold(_fold(rng, 'Affine_1'), 'kernel')
  expected = jax.nn.initializers.lecun_normal()(kernel_key, (4, 2))
  np.testing.assert_array_equal(params['Affine_1']['kernel'], expected)
  bias_key = _fold(_fold(rng, 'Affine_0'), 'bias')
  np.testing.assert_array_equal(
      params['Affine_0']['bias'],
      jax.nn.initializers.normal(1.0)(bias_key, (4,)))


def test_init_does_not_depend_on_call_order():

  class AB(nn.Module):
    def apply(self, x):
      return Affine(x, name='a') + Affine(x, name='b')

  class BA(nn.Module):
    def apply(self, x):
      return Affine(x, name='b') + Affine(x, name='a')

  _, p1 = AB.init(jax.random.PRNGKey(0), X)
  _, p2 = BA.init(jax.random.PRNGKey(0), X)
  jax.tree_util.tree_map(np.testing.assert_array_equal, p1, p2)


def test_typed_keys_give_the_same_params_as_raw_keys():
  _, raw = MLP.init(jax.random.PRNGKey(3), X)
  _, typed = MLP.init(jax.random.key(3), X)
  jax.tree_util.tree_map(np.testing.assert_array_equal, raw, typed)
  _, by_shape = MLP.init_by_shape(jax.random.key(3), [X.shape])
  jax.tree_util.tree_map(np.testing.assert_array_equal, raw, by_shape)


def test_default_names_share_one_counter_per_parent():

  class Net(nn.Module):
    def apply(self, x):
      x = Affine(x)
      x = MLP(x)
      x = Affine(x, name='head')
      return Affine(x)

  _, params = Net.init(jax.random.PRNGKey(0), X)
  assert sorted(params) == ['Affine_0', 'Affine_2', 'MLP_1', 'head']
  assert sorted(params['MLP_1']) == ['Affine_0', 'Affine_1']


@pytest.mark.parametrize('bad,message', [
    ('a/b', r'^invalid name "a/b" in module /: names cannot contain "/" or'),
    ('a:b', r'^invalid name "a:b" in module /: names cannot contain "/" or'),
    ('', r"^module and parameter names must be non-empty strings, got '' "
     r'in module /$')])
def test_invalid_names_are_rejected(bad, message):

  class Net(nn.Module):
    def apply(self, x):
      return Affine(x, name=bad)

  with pytest.raises(ValueError, match=message):
    Net.init(jax.random.PRNGKey(0), X)


def test_duplicate_module_name_is_an_error_naming_the_path():

  class Net(nn.Module):
    def apply(self, x):
      return MLP(Affine(x, name='dup'), name='inner')

  class Inner(nn.Module):
    def apply(self, x):
      return Affine(Affine(x, name='dup'), name='dup')

  class Outer(nn.Module):
    def apply(self, x):
      return Inner(x, name='block')

  Net.init(jax.random.PRNGKey(0), X)
  with pytest.raises(ValueError, match='"dup" already exists in /block'):
    Outer.init(jax.random.PRNGKey(0), X)


def test_duplicate_param_name_is_an_error():

  class Twice(nn.Module):
    def apply(self, x):
      a = self.param('w', (1,), jax.nn.initializers.ones)
      b = self.param('w', (1,), jax.nn.initializers.ones)
      return x * a * b

  class Net(nn.Module):
    def apply(self, x):
      return Twice(x, name='t')

  with pytest.raises(ValueError, match='parameter "/t/w" is defined twice'):
    Net.init(jax.random.PRNGKey(0), X)


def test_a_module_and_a_parameter_cannot_share_a_name():

  class ParamFirst(nn.Module):
    def apply(self, x):
      self.param('w', (1,), jax.nn.initializers.ones)
      return Affine(x, name='w')

  class ModuleFirst(nn.Module):
    def apply(self, x):
      y = Affine(x, name='w')
      return y * self.param('w', (1,), jax.nn.initializers.ones)

  with pytest.raises(ValueError, match=(
      r'^"/net/w" is a parameter, not a submodule: a module and a parameter '
      r'cannot share the name "w"$')):
    ParamFirst.init(jax.random.PRNGKey(0), X, name='net')
  with pytest.raises(ValueError, match='"/w" is a parameter, not a '
                     'submodule'):  # also when applying
    ParamFirst.call({'w': jnp.ones((1,))}, X)
  with pytest.raises(ValueError, match=(
      r'^"/w" is a submodule; a parameter cannot have the same name$')):
    ModuleFirst.init(jax.random.PRNGKey(0), X)


def test_param_shape_mismatch_names_the_path_and_both_shapes():
  _, params = MLP.init(jax.random.PRNGKey(0), X)
  with pytest.raises(ValueError, match=r'"/Affine_0/kernel" has shape '
                     r'\(5, 4\) in the params, but the module asks for '
                     r'\(6, 4\)'):
    MLP.call(params, jnp.ones((3, 6)))


def test_missing_param_is_an_error():
  with pytest.raises(ValueError, match='"/kernel" is missing'):
    Affine.call({}, X)


def test_param_with_shape_none_holds_any_pytree():

  class Tree(nn.Module):
    def apply(self, x):
      p = self.param('tree', None,
                     lambda key, shape: {'a': jnp.ones(2), 'b': (x.mean(),)})
      return p['a'].sum() + p['b'][0]

  y, params = Tree.init(jax.random.PRNGKey(0), X)
  assert set(params['tree']) == {'a', 'b'}
  np.testing.assert_allclose(Tree.call(params, X), y)


def test_initializer_returning_the_wrong_shape_is_an_error():

  class Bad(nn.Module):
    def apply(self, x):
      return self.param('w', (2, 2), lambda k, s: jnp.ones((3,)))

  with pytest.raises(ValueError, match=r'initializer of parameter "/w" '
                     r'returned shape \(3,\), expected \(2, 2\)'):
    Bad.init(jax.random.PRNGKey(0), X)


def test_get_param_reads_params_and_child_dicts():

  class Net(nn.Module):
    def apply(self, x):
      y = Affine(x, name='a')
      kernel = self.get_param('a')['kernel']
      return y, kernel

  (_, kernel), params = Net.init(jax.random.PRNGKey(0), X)
  np.testing.assert_array_equal(kernel, params['a']['kernel'])

  class Missing(nn.Module):
    def apply(self, x):
      return self.get_param('nope')

  with pytest.raises(ValueError, match='no parameter or submodule "nope"'):
    Missing.init(jax.random.PRNGKey(0), X)


def test_partial_binds_kwargs_and_keeps_the_name():
  Wide = MLP.partial(hidden=7)
  assert Wide.__name__ == 'MLP' and Wide.__qualname__ == MLP.__qualname__
  _, params = Wide.init(jax.random.PRNGKey(0), X)
  assert params['Affine_0']['kernel'].shape == (5, 7)
  _, params = Wide.init(jax.random.PRNGKey(0), X, hidden=2)  # call overrides
  assert params['Affine_0']['kernel'].shape == (5, 2)
  Named = Affine.partial(name='fixed')

  class Net(nn.Module):
    def apply(self, x):
      return Named(x)

  _, params = Net.init(jax.random.PRNGKey(0), X)
  assert list(params) == ['fixed']


def test_shared_module_reuses_parameters():

  class Siamese(nn.Module):
    def apply(self, x1, x2):
      encoder = Affine.shared(features=2, name='encoder')
      return encoder(x1), encoder(x2)

  (y1, y2), params = Siamese.init(jax.random.PRNGKey(0), X, 2 * X)
  assert list(params) == ['encoder']
  k, b = params['encoder']['kernel'], params['encoder']['bias']
  np.testing.assert_allclose(y1, X @ k + b, rtol=1e-6)
  np.testing.assert_allclose(y2, 2 * X @ k + b, rtol=1e-6)
  z1, z2 = Siamese.call(params, X, 2 * X)
  np.testing.assert_allclose(z2, y2, rtol=1e-6)


def test_shared_default_name_and_errors():

  class Default(nn.Module):
    def apply(self, x):
      shared = Affine.shared(features=5)
      return shared(shared(x))

  _, params = Default.init(jax.random.PRNGKey(0), X)
  assert list(params) == ['Affine_0']

  with pytest.raises(ValueError, match='only be used inside a Module.apply'):
    Affine.shared()

  class Rename(nn.Module):
    def apply(self, x):
      return Affine.shared(name='s')(x, name='other')

  with pytest.raises(ValueError, match='name of shared module "s" is fixed'):
    Rename.init(jax.random.PRNGKey(0), X)

  class Twice(nn.Module):
    def apply(self, x):
      Affine.shared(name='s')
      Affine.shared(name='s')

  with pytest.raises(ValueError, match='shared module named "s" is already'):
    Twice.init(jax.random.PRNGKey(0), X)

  class Clash(nn.Module):
    def apply(self, x):
      Affine(x, name='s')
      return Affine.shared(name='s')(x)

  with pytest.raises(ValueError, match='"s" already exists'):
    Clash.init(jax.random.PRNGKey(0), X)

  leaked = []

  class Declare(nn.Module):
    def apply(self, x):
      leaked.append(Affine.shared(name='s'))
      return leaked[-1](x)

  class Leak(nn.Module):
    def apply(self, x):
      y = Declare(x, name='d')
      return leaked[-1](y)

  with pytest.raises(ValueError, match=(
      r'^shared module "s" is used outside the apply of "/d" that declared '
      r'it$')):
    Leak.init(jax.random.PRNGKey(0), X)


def test_shared_module_passed_to_a_child_stores_params_in_the_declaring_frame():

  class Child(nn.Module):
    def apply(self, x, dense):
      return dense(x)

  class Parent(nn.Module):
    def apply(self, x):
      dense = Affine.shared(name='dense')
      return Child(x, dense=dense) + dense(x)

  y, params = Parent.init(jax.random.PRNGKey(0), X)
  assert sorted(params) == ['Child_0', 'dense']
  assert params['Child_0'] == {}
  k, b = params['dense']['kernel'], params['dense']['bias']
  np.testing.assert_allclose(y, 2 * (X @ k + b), rtol=1e-6)


def test_calling_a_module_outside_apply_is_an_error():
  with pytest.raises(ValueError, match='called outside of a Module.apply'):
    Affine(X)


def test_call_rejects_params_that_are_not_a_dict():
  with pytest.raises(TypeError, match='^MLP.call expects a params dict, got '
                     'list$'):
    MLP.call([], X)


def test_init_rejects_a_non_key():
  with pytest.raises(TypeError, match='expects a PRNG key'):
    Affine.init(X, X)


def test_init_by_shape_matches_init_and_returns_shapes():
  y, params = MLP.init(jax.random.PRNGKey(1), X)
  y2, params2 = MLP.init_by_shape(jax.random.PRNGKey(1),
                                  [((3, 5), jnp.float32)])
  assert y2 == jax.ShapeDtypeStruct((3, 2), jnp.float32)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, params2)
  for leaf in jax.tree_util.tree_leaves(params2):
    assert isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer)
  y3, _ = MLP.init_by_shape(jax.random.PRNGKey(1), [(3, 5)])  # bare shape
  assert y3.dtype == jnp.float32


def test_init_by_shape_works_with_control_flow_on_the_inputs():

  class Scan(nn.Module):
    def apply(self, xs):
      w = self.param('w', (), jax.nn.initializers.ones)
      return jax.lax.scan(lambda c, x: (c * w + x, c), 0., xs)[0]

  y, params = Scan.init_by_shape(jax.random.PRNGKey(0), [(4,)])
  assert y == jax.ShapeDtypeStruct((), jnp.float32)
  np.testing.assert_allclose(Scan.call(params, jnp.arange(4.)), 6.)


def test_init_by_shape_runs_no_computation():
  # A 40 GB input: evaluating the forward pass would not fit in memory.
  y, params = Affine.init_by_shape(jax.random.PRNGKey(0),
                                   [((100_000, 100_000), jnp.float32)])
  assert y.shape == (100_000, 3)
  assert params['kernel'].shape == (100_000, 3)


def test_init_by_shape_returns_input_independent_outputs_concretely():

  class Mixed(nn.Module):
    def apply(self, x):
      w = self.param('w', (2,), jax.nn.initializers.ones)
      return x.sum(), w * 2

  (dep, indep), _ = Mixed.init_by_shape(jax.random.PRNGKey(0), [(3,)])
  assert not isinstance(indep, jax.core.Tracer)
  assert isinstance(dep, jax.ShapeDtypeStruct)
  np.testing.assert_array_equal(indep, [2., 2.])


def test_init_by_shape_lifts_the_stochastic_scope():

  class Sample(nn.Module):
    def apply(self, x):
      return nn.make_rng()

  rng = jax.random.PRNGKey(7)
  with nn.stochastic(rng):
    key, _ = Sample.init_by_shape(jax.random.PRNGKey(0), [(1,)])
  outer = jax.random.fold_in(rng, 1)
  np.testing.assert_array_equal(key, jax.random.fold_in(outer, 1))


def test_init_by_shape_with_the_wrong_number_of_specs():

  class Add(nn.Module):
    def apply(self, x, y):
      return Affine(x) + Affine(y)

  Add.init_by_shape(jax.random.PRNGKey(0), [(3, 5), (3, 5)])
  with pytest.raises(ValueError, match=r'Add.init_by_shape: 3 positional '
                     'inputs .* do not fit'):
    Add.init_by_shape(jax.random.PRNGKey(0), [(3, 5), (3, 5), (3, 5)])
  with pytest.raises(ValueError, match='1 positional inputs'):
    Add.init_by_shape(jax.random.PRNGKey(0), [(3, 5)])
  with pytest.raises(TypeError, match='list of input specs'):
    Add.init_by_shape(jax.random.PRNGKey(0), (3, 5))


def test_init_by_shape_rejects_data_dependent_initialization():

  class DataInit(nn.Module):
    def apply(self, x):
      return self.param('scale', None, lambda key, _: x.std(0))

  DataInit.init(jax.random.PRNGKey(0), X)  # fine with real inputs
  with pytest.raises(ValueError,
                     match='parameter /scale depends on the inputs'):
    DataInit.init_by_shape(jax.random.PRNGKey(0), [(3, 5)])


def test_create_and_create_by_shape_return_models_without_warnings():
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    y, model = MLP.create(jax.random.PRNGKey(0), X)
    _, model2 = MLP.create_by_shape(jax.random.PRNGKey(0), [X.shape])
  assert isinstance(model, nn.Model) and model.module is MLP
  np.testing.assert_allclose(model(X), y, rtol=1e-6)
  np.testing.assert_allclose(model2(X), y, rtol=1e-6)


def test_module_decorator():

  @nn.module
  def DoubleAffine(x, features):
    return Affine(x, features=features) + Affine(x, features=features)

  assert issubclass(DoubleAffine, nn.Module)
  assert DoubleAffine.__name__ == 'DoubleAffine'
  y, params = DoubleAffine.init(jax.random.PRNGKey(0), X, features=2)
  assert sorted(params) == ['Affine_0', 'Affine_1']
  np.testing.assert_allclose(DoubleAffine.call(params, X, features=2), y)


class Embedding(nn.Module):
  """An Embed-like module with an `attend` module_method."""

  def apply(self, ids, num, features):
    table = self.param('table', (num, features), jax.nn.initializers.normal())
    return table[ids]

  @nn.module_method
  def attend(self, query, num, features):
    table = self.param('table', (num, features), jax.nn.initializers.normal())
    return query @ table.T


def test_module_method_on_models_shared_modules_and_call():
  ids = jnp.array([0, 2])
  _, params = Embedding.init(jax.random.PRNGKey(0), ids, num=4, features=3)
  table = params['table']
  model = nn.Model(Embedding.partial(num=4, features=3), params)
  q = jnp.ones((2, 3))
  np.testing.assert_allclose(model.attend(q), q @ table.T, rtol=1e-6)
  np.testing.assert_allclose(
      Embedding.attend.call(params, q, num=4, features=3), q @ table.T,
      rtol=1e-6)

  class Tied(nn.Module):
    def apply(self, ids):
      embed = Embedding.shared(num=4, features=3, name='embed')
      return embed.attend(embed(ids))

  y, tied_params = Tied.init(jax.random.PRNGKey(0), ids)
  t = tied_params['embed']['table']
  np.testing.assert_allclose(y, t[ids] @ t.T, rtol=1e-6)


def test_unknown_module_method_is_an_error():
  _, params = Embedding.init(jax.random.PRNGKey(0), jnp.array([0]), num=2,
                             features=2)
  model = nn.Model(Embedding, params)
  with pytest.raises(AttributeError, match=r'no attribute or module_method '
                     r'"decode" \(its module methods: \[\'attend\'\]\)'):
    model.decode(1)


def test_self_path_and_is_initializing():
  seen = []

  class Probe(nn.Module):
    def apply(self, x):
      seen.append((self.path, self.is_initializing()))
      return x

  class Net(nn.Module):
    def apply(self, x):
      return Probe(Probe(x, name='p'))

  _, params = Net.init(jax.random.PRNGKey(0), X)
  Net.call(params, X)
  assert seen == [('/p', True), ('/Probe_0', True), ('/p', False),
                  ('/Probe_0', False)]


def test_reuse_params_initializes_the_rest():
  _, donor = MLP.init(jax.random.PRNGKey(1), X)
  _, fresh = MLP.init(jax.random.PRNGKey(2), X)
  _, params = MLP.init(jax.random.PRNGKey(2), X,
                       reuse_params={'Affine_0': donor['Affine_0']})
  jax.tree_util.tree_map(np.testing.assert_array_equal, params['Affine_0'],
                         donor['Affine_0'])
  jax.tree_util.tree_map(np.testing.assert_array_equal, params['Affine_1'],
                         fresh['Affine_1'])
  _, by_shape = MLP.init_by_shape(jax.random.PRNGKey(2), [X.shape],
                                  reuse_params={'Affine_0': donor['Affine_0']})
  jax.tree_util.tree_map(np.testing.assert_array_equal, by_shape, params)


def test_reuse_params_errors():
  _, donor = MLP.init(jax.random.PRNGKey(1), X, hidden=6)
  with pytest.raises(ValueError, match=r'reused parameter "/Affine_0/kernel" '
                     r'has shape \(5, 6\), but the module creates it with '
                     r'shape \(5, 4\)'):
    MLP.init(jax.random.PRNGKey(0), X,
             reuse_params={'Affine_0': donor['Affine_0']})
  with pytest.raises(ValueError, match=r"match no parameter.*'/Affine_9/w'"):
    MLP.init(jax.random.PRNGKey(0), X,
             reuse_params={'Affine_9': {'w': jnp.ones(1)}})


def test_named_scopes_carry_module_names_into_the_compiled_program():
  _, params = MLP.init(jax.random.PRNGKey(0), X)
  text = jax.jit(MLP.call).lower(params, X).as_text(debug_info=True)
  assert 'MLP/Affine_1' in text


def test_params_first_created_inside_a_scan_body_are_concrete():

  class Scanned(nn.Module):
    def apply(self, xs):
      cell = Affine.shared(features=5, name='cell')
      return jax.lax.scan(lambda c, x: (cell(c) + x, None), xs[0], xs)[0]

  xs = jnp.ones((3, 2, 5))
  _, params = Scanned.init(jax.random.PRNGKey(0), xs)
  for leaf in jax.tree_util.tree_leaves(params):
    assert not isinstance(leaf, jax.core.Tracer)
  _, by_shape = Scanned.init_by_shape(jax.random.PRNGKey(0), [xs.shape])
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, by_shape)


def test_init_under_jit_with_a_traced_rng():
  jitted = jax.jit(lambda rng: MLP.init(rng, X)[1])(jax.random.PRNGKey(0))
  _, eager = MLP.init(jax.random.PRNGKey(0), X)
  jax.tree_util.tree_map(np.testing.assert_array_equal, eager, jitted)


def test_capture_module_outputs_records_every_call_by_path():

  class Net(nn.Module):
    def apply(self, x):
      shared = Affine.shared(features=5, name='shared')
      return MLP(shared(shared(x)), hidden=3)

  _, params = Net.init(jax.random.PRNGKey(0), X)
  with nn.capture_module_outputs() as outputs:
    y = Net.call(params, X)
  assert sorted(outputs.as_dict()) == ['/', '/MLP_0', '/MLP_0/Affine_0',
                                       '/MLP_0/Affine_1', '/shared']
  np.testing.assert_array_equal(outputs['/'][0], y)
  assert all(isinstance(v, list) for v in outputs.as_dict().values())
  first, second = outputs['/shared']
  p = params['shared']
  np.testing.assert_allclose(first, X @ p['kernel'] + p['bias'], rtol=1e-6)
  np.testing.assert_allclose(second, first @ p['kernel'] + p['bias'],
                             rtol=1e-6)
  # Once the block exits the collection is immutable, hence a pytree.
  assert len(jax.tree_util.tree_leaves(outputs)) == 6


def test_init_by_shape_under_jit_vmap_and_pmap_of_the_rng():
  # The 2020 ensembling idiom: jax.pmap(create_model)(rngs).
  def create(rng):
    return MLP.init_by_shape(rng, [X.shape])[1]

  rngs = jax.random.split(jax.random.PRNGKey(0), 8)
  for transform in (jax.vmap, jax.pmap):
    stacked = transform(create)(rngs)
    for i in (0, 7):
      expected = MLP.init(rngs[i], X)[1]
      jax.tree_util.tree_map(
          lambda a, b, i=i: np.testing.assert_array_equal(a[i], b),
          stacked, expected)
  jitted = jax.jit(create)(rngs[3])
  jax.tree_util.tree_map(np.testing.assert_array_equal, jitted,
                         MLP.init(rngs[3], X)[1])
  outputs = []
  jax.jit(lambda r: outputs.append(MLP.init_by_shape(r, [X.shape])[0]))(
      rngs[0])
  assert outputs == [jax.ShapeDtypeStruct((3, 2), jnp.float32)]


def test_unknown_keyword_arguments_are_named_with_a_suggestion():
  with pytest.raises(TypeError, match=r'Dense.partial: Dense.apply has no '
                     r'argument "featurez" \(did you mean "features"\?\)'):
    nn.Dense.partial(featurez=3)
  with pytest.raises(TypeError, match=r'Dense.init: .* "biass" \(did you '
                     r'mean "bias"\?\), "zzz"; it takes \[.*features'):
    nn.Dense.init(jax.random.PRNGKey(0), X, 3, biass=False, zzz=1)
  _, params = nn.Dense.init(jax.random.PRNGKey(0), X, 3)
  with pytest.raises(TypeError, match='Dense.call: .*"dtypes"'):
    nn.Dense.call(params, X, 3, dtypes=jnp.float32)
  with pytest.raises(TypeError, match='Dense.init_by_shape: .*"feature"'):
    nn.Dense.init_by_shape(jax.random.PRNGKey(0), [X.shape], feature=3)
  # apply(**kwargs) takes anything.
  nn.module(lambda x, **kw: x).partial(anything=1)


def test_init_by_shape_with_a_negative_dimension_names_the_spec():
  with pytest.raises(ValueError, match=r'Dense.init_by_shape: input spec 0 '
                     r'has shape \(2, -1\), with a negative dimension'):
    nn.Dense.init_by_shape(jax.random.PRNGKey(0), [((2, -1), jnp.float32)],
                           features=3)


def test_init_by_shape_of_a_module_without_inputs():
  # 2020's StochasticTest: a module whose apply takes no inputs.
  class Noise(nn.Module):
    def apply(self):
      return jax.random.uniform(nn.make_rng(), (2,)) + self.param(
          'b', (2,), jax.nn.initializers.ones)

  with nn.stochastic(jax.random.PRNGKey(1)):
    y, params = Noise.init_by_shape(jax.random.PRNGKey(0), [])
  expected = jax.random.uniform(
      jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(1), 1), 1),
      (2,)) + 1
  np.testing.assert_allclose(y, expected, rtol=1e-6)
  np.testing.assert_array_equal(params['b'], np.ones(2))


def test_the_2020_names_of_nn_base_and_nn_utils():
  from flaxish.nn import base, utils  # pylint: disable=g-import-not-at-top
  assert base.MODULE_CLASSMETHODS == ['create', 'create_by_shape', 'init',
                                      'init_by_shape', 'call', 'partial']
  assert issubclass(base.TruncatedModule, base.TransparentModule)
  stack = utils.CallStack()
  with stack.frame() as data:
    assert data == {} and stack[-1] is data and len(stack) == 1
  with stack.frame('x') as data:
    assert data == 'x'
  assert not stack

  class C:
    @utils.classproperty
    def name(cls):
      return cls.__name__

  assert C.name == 'C' and utils.classproperty(f=len).fget is len
