"""flaxish.nn: Modules, Models, state, randomness and layers."""
from flaxish.nn import base, utils
from flaxish.nn import (activation, attention, initializers, linear,
                        normalization, pooling, recurrent)
from flaxish.nn.activation import (celu, elu, gelu, glu, hard_sigmoid,
                                   hard_swish, hard_tanh, leaky_relu,
                                   log_sigmoid, log_softmax, relu, relu6,
                                   selu, sigmoid, silu, soft_sign, softmax,
                                   softplus, swish, tanh)
from flaxish.nn.attention import (MultiHeadDotProductAttention, SelfAttention,
                                  dot_product_attention)
from flaxish.nn.collection import Collection, get_state, stateful
from flaxish.nn.modules import (Model, Module, capture_module_outputs, module,
                               module_method)
from flaxish.nn.combinators import Sequential, stax_module
from flaxish.nn.linear import Conv, ConvTranspose, Dense, DenseGeneral, Embed
from flaxish.nn.normalization import BatchNorm, GroupNorm, LayerNorm
from flaxish.nn.pooling import avg_pool, max_pool
from flaxish.nn.recurrent import ConvLSTM, GRUCell, LSTMCell
from flaxish.nn.stochastic import dropout, is_stochastic, make_rng, stochastic
from flaxish.nn.summary import Summary, tabulate

__all__ = ['base', 'utils', 'Collection', 'Model', 'Module',
           'capture_module_outputs', 'get_state', 'module', 'module_method',
           'stateful', 'Sequential', 'stax_module', 'is_stochastic',
           'make_rng', 'stochastic', 'Summary', 'tabulate',
           'activation', 'attention', 'initializers', 'linear',
           'normalization', 'pooling', 'recurrent',
           'Dense', 'DenseGeneral', 'Conv', 'ConvTranspose', 'Embed',
           'BatchNorm', 'LayerNorm', 'GroupNorm', 'max_pool', 'avg_pool',
           'dropout', 'LSTMCell', 'GRUCell', 'ConvLSTM',
           'dot_product_attention', 'MultiHeadDotProductAttention',
           'SelfAttention', 'celu', 'elu', 'gelu', 'glu', 'leaky_relu',
           'log_sigmoid', 'log_softmax', 'relu', 'sigmoid', 'soft_sign',
           'softmax', 'softplus', 'swish', 'tanh', 'selu', 'hard_tanh',
           'relu6', 'hard_sigmoid', 'hard_swish', 'silu']
