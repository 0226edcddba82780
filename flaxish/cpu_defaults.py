"""Opt-in XLA:CPU settings for training on a CPU.

On CPU, jaxlib's experimental YNNPACK fusions run the gradient convolutions
of a CNN slower than XLA's own convolutions, and on jaxlib 0.11 and later a
bfloat16 YNNPACK fusion that ends in a reduction is miscompiled. `apply()`
takes those fusion types out of YNNPACK by adding to `XLA_FLAGS`, e.g.

    --xla_cpu_experimental_ynn_fusion_type=-individual_convolution

Nothing happens on `import flaxish`. Call it first thing in a training
script, before JAX runs anything (importing jax is fine):

    from flaxish import cpu_defaults
    cpu_defaults.apply()

or set `FLAXISH_CPU_DEFAULTS=1` in the environment, and `import flaxish` calls
it. `FLAXISH_CPU_DEFAULTS=0` turns an explicit `apply()` into a no-op.

- **Never over the user.** A flag already named in `XLA_FLAGS` is kept as
  the user set it.
- **Only where measured.** Flags are listed per jaxlib version
  (`FLAGS_BY_JAXLIB`); other versions get none, since XLA rejects values it
  does not know. Measure them with `make bench BENCH_ARGS=--cpu-defaults`.
- **Too late is an error.** XLA reads `XLA_FLAGS` once, when JAX's backend
  starts; `apply()` raises `CpuDefaultsError` after that.
- The flags go into `os.environ['XLA_FLAGS']`, so child processes inherit
  them.
"""
import enum
import gc
import logging
import os
import sys
from typing import Mapping, MutableMapping, Optional, Tuple

__all__ = ['apply', 'apply_if_requested', 'flags_for_this_jaxlib',
           'jax_started', 'Status', 'CpuDefaultsError', 'ENV',
           'FLAGS_BY_JAXLIB']

ENV = 'FLAXISH_CPU_DEFAULTS'
_OFF = ('0', 'false', 'no', 'off')
_ON = ('1', 'true', 'yes', 'on')

_YNN = '--xla_cpu_experimental_ynn_fusion_type='
# (major, minor) of jaxlib -> the flags measured to help on that version.
FLAGS_BY_JAXLIB = {
    (0, 10): (_YNN + '-individual_convolution',),
    (0, 11): (_YNN + '-individual_convolution,-reduce',),
    (0, 12): (_YNN + '-individual_convolution,-reduce',),
}

_log = logging.getLogger(__name__)


class Status(str, enum.Enum):
  """What `apply()` did."""
  APPLIED = 'applied'            # flags added to XLA_FLAGS
  OPTED_OUT = 'opted out'        # FLAXISH_CPU_DEFAULTS=0
  USER_SET = 'user set'          # every flag is already named in XLA_FLAGS
  NOT_MEASURED = 'not measured'  # no flags for this jaxlib version


class CpuDefaultsError(RuntimeError):
  """`apply()` was called after JAX's backend had started."""


def _jaxlib_version() -> Tuple[int, ...]:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  parts = metadata.version('jaxlib').split('.')[:2]
  return tuple(int(''.join(c for c in p if c.isdigit()) or 0) for p in parts)


def flags_for_this_jaxlib(version: Optional[Tuple[int, ...]] = None
                          ) -> Tuple[str, ...]:
  """The flags for jaxlib `version` (default: the installed one)."""
  version = _jaxlib_version() if version is None else tuple(version)
  return FLAGS_BY_JAXLIB.get(version[:2], ())


def _flag_name(token: str) -> str:
  return token.lstrip('-').split('=', 1)[0]


def jax_started() -> bool:
  """True once JAX has created a backend (and so has read `XLA_FLAGS`).

  Reads only: whether `jax.extend.backend.get_backend` has cached a
  backend, or a jaxlib client object exists. Changes no JAX setting.
  """
  if 'jax' not in sys.modules:
    return False
  from jax.extend import backend  # pylint: disable=g-import-not-at-top
  info = getattr(backend.get_backend, 'cache_info', None)
  if info is not None and info().currsize:
    return True
  return any(type(o).__name__ == 'Client' and
             type(o).__module__.startswith('jaxlib') for o in gc.get_objects())


def apply(environ: Optional[MutableMapping[str, str]] = None) -> Status:
  """Adds this jaxlib's XLA:CPU flags to `XLA_FLAGS`.

  Arguments:
    environ: the environment to read and change (default `os.environ`).
  Returns:
    a `Status`: APPLIED, OPTED_OUT, USER_SET or NOT_MEASURED; what was added
    is logged at INFO level.
  Raises:
    CpuDefaultsError: JAX's backend has started, so the flags would have no
      effect. Call `apply()` before running anything with JAX.
  """
  environ = os.environ if environ is None else environ
  if environ.get(ENV, '').strip().lower() in _OFF:
    _log.info('flaxish CPU defaults: off (%s=%s)', ENV, environ[ENV])
    return Status.OPTED_OUT
  flags = flags_for_this_jaxlib()
  if not flags:
    _log.info('flaxish CPU defaults: none for jaxlib %s',
              '.'.join(map(str, _jaxlib_version())))
    return Status.NOT_MEASURED
  current = environ.get('XLA_FLAGS', '')
  user_names = {_flag_name(t) for t in current.split()}
  missing = [f for f in flags if _flag_name(f) not in user_names]
  if not missing:
    _log.info('flaxish CPU defaults: XLA_FLAGS already sets %s',
              ', '.join(_flag_name(f) for f in flags))
    return Status.USER_SET
  if jax_started():
    raise CpuDefaultsError(
        'flaxish.cpu_defaults.apply() was called after JAX started its '
        f'backend, so XLA would ignore {" ".join(missing)}. Call it at the '
        'top of the script, before anything runs on a JAX device, or set '
        f'{ENV}=1 (or XLA_FLAGS) in the environment')
  environ['XLA_FLAGS'] = ' '.join([current] + missing).strip()
  _log.info('flaxish CPU defaults: added %s to XLA_FLAGS', ' '.join(missing))
  return Status.APPLIED


def apply_if_requested(environ: Optional[Mapping[str, str]] = None
                       ) -> Optional[Status]:
  """`apply()` when `FLAXISH_CPU_DEFAULTS` is 1/true/yes/on, else None."""
  environ = os.environ if environ is None else environ
  if environ.get(ENV, '').strip().lower() in _ON:
    return apply(environ)
  return None
