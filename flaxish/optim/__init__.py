"""Optimizers: the 2020 flax.optim API plus wrappers and bridges."""
from flaxish.optim.accumulation import GradientAccumulation
from flaxish.optim.adafactor import Adafactor
from flaxish.optim.adagrad import Adagrad
from flaxish.optim.adam import Adam
from flaxish.optim.base import (ModelParamTraversal, MultiOptimizer,
                                Optimizer, OptimizerDef, OptimizerState,
                                ReplicatedOptimizer)
from flaxish.optim.clipping import ClipByGlobalNorm
from flaxish.optim.dynamic_scale import DynamicScale
from flaxish.optim.ema import ParameterEMA
from flaxish.optim.example_libraries_adapter import ExampleLibrariesOptimizer
from flaxish.optim.lamb import LAMB
from flaxish.optim.lars import LARS
from flaxish.optim.momentum import Momentum
from flaxish.optim.optax_adapter import OptaxOptimizer
from flaxish.optim.rmsprop import RMSProp
from flaxish.optim.sgd import GradientDescent
from flaxish.optim.weight_norm import WeightNorm
from flaxish.optim.wrapper import OptimizerWrapper

__all__ = [
    'Adafactor', 'Adagrad', 'Adam', 'ClipByGlobalNorm', 'DynamicScale',
    'ExampleLibrariesOptimizer', 'GradientAccumulation', 'GradientDescent',
    'LAMB', 'LARS', 'ModelParamTraversal', 'Momentum', 'MultiOptimizer',
    'OptaxOptimizer', 'Optimizer', 'OptimizerDef', 'OptimizerState',
    'OptimizerWrapper', 'ParameterEMA', 'RMSProp', 'ReplicatedOptimizer',
    'WeightNorm'
]
