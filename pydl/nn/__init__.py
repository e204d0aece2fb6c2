"""``pydl.nn``: PyTorch-style layers on pydl's kernels.

Names, constructor arguments, parameter and buffer names, shapes and default
initialisations are torch 2.13's, so a ``state_dict`` moves both ways. Every
layer calls ``pydl.nn.functional`` (the registry's ops on Tensors), so every
backend and every kernel serves it.
"""
from . import functional, init, utils  # noqa: F401
from .parameter import Parameter  # noqa: F401
from .module import Module, ModuleDict, ModuleList, Sequential  # noqa: F401
# the non-recurrent layers and the losses
from .linear import Flatten, Identity, Linear, Unflatten  # noqa: F401,E402
from .conv import Conv2d  # noqa: F401,E402
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d  # noqa: F401,E402
from .activation import ELU, GELU, LeakyReLU, LogSoftmax, PReLU, ReLU, Sigmoid, Softmax, Tanh  # noqa: F401,E402
from .normalization import (BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm2d, LayerNorm,  # noqa: F401,E402
                            LocalResponseNorm)
from .dropout import Dropout  # noqa: F401,E402
from .sparse import Embedding  # noqa: F401,E402
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, GaussianNLLLoss, KLDivLoss, L1Loss,  # noqa: F401,E402
                   MSELoss, NLLLoss)
# the recurrent, attention and transformer layers
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, RNNCellBase  # noqa: F401,E402
from .attention import MultiheadAttention  # noqa: F401,E402
from .transformer import TransformerEncoder, TransformerEncoderLayer  # noqa: F401,E402
