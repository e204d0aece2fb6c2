"""``pydl.optim``: torch.optim's optimizers and learning-rate schedulers on pydl Tensors.

Same names, arguments, defaults, formulas and state_dict layout as PyTorch
2.13; every update happens in place on the parameters' arrays (NumPy or CuPy).
"""
from . import lr_scheduler  # noqa: F401
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "lr_scheduler"]
