"""flaxish.nn: Modules, Models, state, randomness and layers."""
from flaxish.nn import base, utils
from flaxish.nn.base import (Collection, Model, Module,
                             capture_module_outputs, get_state, module,
                             module_method, stateful)
from flaxish.nn.stochastic import is_stochastic, make_rng, stochastic

__all__ = ['base', 'utils', 'Collection', 'Model', 'Module',
           'capture_module_outputs', 'get_state', 'module', 'module_method',
           'stateful', 'is_stochastic', 'make_rng', 'stochastic']
