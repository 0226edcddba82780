"""compile_twice: the program summary counts fusions and library calls."""
import jax
import jax.numpy as jnp

from benchmarks import compile_twice


def test_program_summary_counts_the_fusions_of_a_compiled_program():
  f = jax.jit(lambda x: jnp.sum(jnp.exp(x) * 2.) + jnp.max(x))
  summary = compile_twice.program_summary(
      f.lower(jnp.ones((8, 8))).compile().as_text())
  assert sum(summary['fusions'].values()) >= 1
  assert summary['hlo_lines'] > 0 and summary['custom_calls'] == {}


def test_main_compiles_each_implementation_each_round(capsys):
  compile_twice.main(['mnist_cnn', 'flaxish,plain_jax', '--preset=tiny',
                      '--rounds=1'])
  lines = capsys.readouterr().out.strip().splitlines()
  assert [l.split(':')[0] for l in lines] == ['round 0 flaxish',
                                              'round 0 plain_jax']
