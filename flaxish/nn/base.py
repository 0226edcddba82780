"""The Module system (`flax.nn.base` in 2020), split by concept into
modules.py, model.py, collection.py, stochastic.py and frame.py; this module
re-exports their public names under the 2020 path."""
from flaxish.nn.collection import (Collection, ModuleState, get_state,
                                   is_stateful, stateful)
from flaxish.nn.model import Model, truncated_module
from flaxish.nn.modules import (Module, capture_module_outputs, module,
                               module_method)

__all__ = ['Collection', 'ModuleState', 'get_state', 'is_stateful',
           'stateful', 'Model', 'truncated_module', 'Module',
           'capture_module_outputs', 'module', 'module_method']
