"""flaxish.nn: Modules, Models, state, randomness and layers."""
from flaxish.nn import base, utils
from flaxish.nn.base import (Collection, Model, Module,
                             capture_module_outputs, get_state, module,
                             module_method, stateful)
from flaxish.nn.combinators import Sequential, stax_module
from flaxish.nn.stochastic import is_stochastic, make_rng, stochastic
from flaxish.nn.summary import Summary, tabulate

__all__ = ['base', 'utils', 'Collection', 'Model', 'Module',
           'capture_module_outputs', 'get_state', 'module', 'module_method',
           'stateful', 'Sequential', 'stax_module', 'is_stochastic',
           'make_rng', 'stochastic', 'Summary', 'tabulate']
