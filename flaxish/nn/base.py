"""The 2020 import path `flax.nn.base`: the Module system's public names.

The code lives in modules.py, frame.py, collection.py and stochastic.py;
nothing inside flaxish imports this module.
"""
from flaxish.nn.collection import (Collection, ModuleState,
                                   collection_from_iterable, get_state,
                                   is_stateful, iterate_collection, stateful)
from flaxish.nn.modules import (MODULE_CLASSMETHODS, Model, Module,
                               TransparentModule, TruncatedModule,
                               capture_module_outputs, module, module_method,
                               truncated_module)

__all__ = ['Collection', 'ModuleState', 'get_state', 'is_stateful',
           'stateful', 'iterate_collection', 'collection_from_iterable',
           'Model', 'Module', 'TransparentModule', 'TruncatedModule',
           'MODULE_CLASSMETHODS', 'capture_module_outputs', 'module',
           'module_method', 'truncated_module']
