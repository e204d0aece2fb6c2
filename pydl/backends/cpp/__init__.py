"""The ``cpp`` backend: pybind11 kernels in ``pydl._cpp`` (kernels/cpp/).

Importing this package fails with ImportError when the extension is not
built; :mod:`pydl.backends` then reports the backend as unavailable.
"""
from pydl import _cpp
from pydl.backends import register_thread_hook

register_thread_hook("cpp", _cpp.set_num_threads)

from . import attention, conv, elementwise, gemm, loss, norm, pool, rnn, sparse  # noqa: E402,F401  (each registers its family's ops)
