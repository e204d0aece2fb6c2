"""The NumPy reference: the specification of every op, forward and backward.

Short and readable over fast; computes in the input's dtype (float32 or
float64). Every other backend is tested against this one.
"""
from . import elementwise, gemm, conv, pool, rnn, attention, norm, loss, sparse  # noqa: F401
