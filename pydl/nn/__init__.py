"""``pydl.nn``: PyTorch-style layers on pydl's kernels.

Names, constructor arguments, parameter and buffer names, shapes and default
initialisations are torch 2.13's, so a ``state_dict`` moves both ways. Every
layer calls ``pydl.nn.functional`` (the registry's ops on Tensors), so every
backend and every kernel serves it.
"""
from . import functional, init  # noqa: F401
from .parameter import Parameter  # noqa: F401
from .module import Module, ModuleDict, ModuleList, Sequential  # noqa: F401
