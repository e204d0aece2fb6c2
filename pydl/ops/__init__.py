"""The functional API: ``pydl.ops.<name>`` and ``pydl.ops.<name>_backward``.

Each family module declares its ops with :func:`pydl.registry.defop`; this
package re-exports every declared op and its backward. Where an op shares
its family's name (``rnn``), the op wins: ``pydl.ops.rnn`` is the function;
tools that walk families use ``registry.SPECS`` and ``spec.family``.
"""
from ..registry import SPECS
from . import elementwise, gemm, conv, pool, rnn, attention, norm, loss, sparse  # noqa: F401  (declare ops)
from .elementwise import dropout_mask  # noqa: F401

__all__ = ["dropout_mask"]
for _name, _spec in SPECS.items():
    globals()[_name] = _spec.forward
    globals()[_name + "_backward"] = _spec.backward
    __all__ += [_name, _name + "_backward"]
del _name, _spec
