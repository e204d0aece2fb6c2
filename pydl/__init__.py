"""pydl: a deep-learning performance engine for NumPy and CuPy arrays.

``pydl.ops`` holds the functional API (every op and its ``_backward``);
``pydl.use_backend`` / ``backend=`` / ``PYDL_BACKEND`` pick a backend;
``pydl.backends.available()`` says which backends can run here and why not.
"""
__version__ = "0.1.0"

from . import ops  # noqa: E402  (declares every op)
from .backends import available, get_num_threads, set_num_threads  # noqa: E402
from .registry import BACKENDS, use_backend  # noqa: E402

__all__ = ["ops", "use_backend", "available", "set_num_threads", "get_num_threads", "BACKENDS", "__version__"]
