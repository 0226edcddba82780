"""XLA:CPU settings that flaxish turns on by default, before JAX starts.

On CPU, jaxlib 0.10 and 0.11's experimental YNNPACK fusions run the backward
(gradient) convolutions 2-4x slower than XLA's own Eigen convolutions and
keep only about one core busy, so a training step of a CNN is 1.2-1.4x
slower than it needs to be. flaxish therefore takes convolutions out of
YNNPACK's fusion types (dots and reductions stay in it) by adding

    --xla_cpu_experimental_ynn_fusion_type=-individual_convolution

to `XLA_FLAGS`. Measurements: `benchmarks/RESULTS_cpu_flags.md`; the method
and the settings tried: `benchmarks/README.md`, section "CPU defaults".

- **When.** `import flaxish` calls `apply()`. XLA reads `XLA_FLAGS` once,
  when JAX's backend starts (the first computation or device query), so the
  defaults take effect when flaxish is imported before anything runs on a
  JAX device; importing jax before flaxish is fine. If the backend has
  already started, `apply()` changes nothing and warns
  (`CpuDefaultsWarning`).
- **Never over the user.** A flag named in `XLA_FLAGS` already is left as
  the user set it.
- **Only where measured.** The flags are listed per jaxlib version
  (`FLAGS_BY_JAXLIB`); other versions get none (the flag is experimental,
  its values change between versions, and XLA rejects unknown values).
- **Opt out** with `FLAXISH_CPU_DEFAULTS=0` in the environment before
  `import flaxish`.
- The flags go into this process's `os.environ['XLA_FLAGS']`, so child
  processes inherit them (as they inherit any user setting).
"""
import enum
import os
import warnings
from typing import Optional, Tuple

__all__ = ['apply', 'flags_for_this_jaxlib', 'Status', 'CpuDefaultsWarning',
           'OPT_OUT_ENV', 'FLAGS_BY_JAXLIB', 'STATUS_AT_IMPORT']

OPT_OUT_ENV = 'FLAXISH_CPU_DEFAULTS'
_OFF_VALUES = ('0', 'false', 'no', 'off')

# (major, minor) of jaxlib -> the flags measured to help on that version.
_NO_YNN_CONVOLUTIONS = (
    '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',)
FLAGS_BY_JAXLIB = {
    (0, 10): _NO_YNN_CONVOLUTIONS,  # measured on 0.10.2
    (0, 11): _NO_YNN_CONVOLUTIONS,  # measured on 0.11.2
}


class Status(str, enum.Enum):
  """What `apply()` did."""
  APPLIED = 'applied'            # flags added to XLA_FLAGS
  OPTED_OUT = 'opted out'        # FLAXISH_CPU_DEFAULTS=0
  USER_SET = 'user set'          # every flag is already in XLA_FLAGS
  NOT_MEASURED = 'not measured'  # no flags for this jaxlib version
  TOO_LATE = 'too late'          # JAX's backend had already started


# What `import flaxish` got from `apply()` (set by flaxish/__init__.py).
STATUS_AT_IMPORT: Optional[Status] = None


class CpuDefaultsWarning(UserWarning):
  """flaxish's CPU defaults could not be applied (JAX had started)."""


def _jaxlib_version() -> Tuple[int, ...]:
  import jaxlib  # pylint: disable=g-import-not-at-top
  parts = []
  for part in jaxlib.__version__.split('.')[:2]:
    digits = ''.join(c for c in part if c.isdigit())
    parts.append(int(digits or 0))
  return tuple(parts)


def flags_for_this_jaxlib(version: Optional[Tuple[int, ...]] = None
                          ) -> Tuple[str, ...]:
  """The default flags for jaxlib `version` (default: the installed one)."""
  version = _jaxlib_version() if version is None else tuple(version)
  return FLAGS_BY_JAXLIB.get(version[:2], ())


def _flag_name(token: str) -> str:
  return token.lstrip('-').split('=', 1)[0]


def _backend_started() -> bool:
  """True once JAX's backend exists (XLA_FLAGS has then been read).

  Uses only `jax.config`: JAX refuses to change `jax_num_cpu_devices`
  once its backends are initialised, and accepts it before.
  """
  import jax  # pylint: disable=g-import-not-at-top
  name = 'jax_num_cpu_devices'
  current = getattr(jax.config, name)
  try:
    jax.config.update(name, current + 1)
  except RuntimeError:
    return True
  jax.config.update(name, current)
  return False


def apply(environ=None, warn: bool = True) -> Status:
  """Adds flaxish's XLA:CPU defaults to `XLA_FLAGS` if it is not too late.

  Arguments:
    environ: the environment to read and change (default `os.environ`).
    warn: warn with `CpuDefaultsWarning` when JAX had already started.

  Returns:
    a `Status`: APPLIED, OPTED_OUT, USER_SET, NOT_MEASURED or TOO_LATE.
    Calling it again after APPLIED returns USER_SET (nothing left to add).
  """
  environ = os.environ if environ is None else environ
  if environ.get(OPT_OUT_ENV, '1').strip().lower() in _OFF_VALUES:
    return Status.OPTED_OUT
  flags = flags_for_this_jaxlib()
  if not flags:
    return Status.NOT_MEASURED
  current = environ.get('XLA_FLAGS', '')
  user_names = {_flag_name(t) for t in current.split()}
  missing = [f for f in flags if _flag_name(f) not in user_names]
  if not missing:
    return Status.USER_SET
  if _backend_started():
    import jax  # pylint: disable=g-import-not-at-top
    if warn and jax.default_backend() == 'cpu':
      warnings.warn(
          'flaxish could not apply its XLA:CPU defaults '
          f'({" ".join(missing)}): JAX had already started its backend. '
          'Import flaxish before running anything with JAX, or set '
          f'XLA_FLAGS yourself; set {OPT_OUT_ENV}=0 to silence this.',
          CpuDefaultsWarning, stacklevel=3)
    return Status.TOO_LATE
  environ['XLA_FLAGS'] = ' '.join([current] + missing).strip()
  return Status.APPLIED
