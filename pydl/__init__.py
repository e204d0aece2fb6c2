"""pydl: a deep-learning performance engine for NumPy and CuPy arrays.

``pydl.ops`` holds the functional API (every op and its ``_backward``);
``pydl.use_backend`` / ``backend=`` / ``PYDL_BACKEND`` pick a backend;
``pydl.backends.available()`` says which backends can run here and why not.
On top: ``pydl.Tensor`` (autograd), ``pydl.nn`` (layers), ``pydl.optim``
(optimizers and schedulers), ``pydl.save`` / ``pydl.load`` (checkpoints),
``pydl.data`` (data sets and loaders), ``pydl.models`` (the classic models),
``pydl.train`` (the fit loop behind ``pydl train``).
"""
__version__ = "0.1.0"

from . import ops  # noqa: E402  (declares every op)
from .backends import available, get_num_threads, set_num_threads  # noqa: E402
from .backends._neighbours import set_blas_parking  # noqa: E402
from .registry import BACKENDS, use_backend  # noqa: E402
from .autograd import (  # noqa: E402
    Tensor, Function, no_grad, enable_grad, inference_mode, set_grad_enabled, is_grad_enabled,
    tensor, as_tensor, from_numpy, zeros, ones, full, empty, zeros_like, ones_like, randn, rand,
    arange, cat, stack, where, manual_seed, default_generator,
)

__all__ = ["ops", "use_backend", "available", "set_num_threads", "get_num_threads", "set_blas_parking",
           "BACKENDS", "__version__",
           "Tensor", "Function", "no_grad", "enable_grad", "inference_mode", "set_grad_enabled",
           "is_grad_enabled", "tensor", "as_tensor", "from_numpy", "zeros", "ones", "full", "empty",
           "zeros_like", "ones_like", "randn", "rand", "arange", "cat", "stack", "where", "manual_seed",
           "default_generator", "nn", "optim", "data", "models", "train", "save", "load"]


def __getattr__(name):
    # the layers above the ops load on first use: `import pydl` stays as cheap as the ops
    import importlib

    if name in ("nn", "optim", "data", "models", "train"):
        return importlib.import_module(f".{name}", __name__)
    if name in ("save", "load"):
        return getattr(importlib.import_module(".serialization", __name__), name)
    raise AttributeError(f"module 'pydl' has no attribute {name!r}")
