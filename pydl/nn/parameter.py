"""``Parameter``: a Tensor a Module registers as trainable (``requires_grad`` by default)."""
from __future__ import annotations

from ..autograd import Tensor


class Parameter(Tensor):
    """A leaf Tensor that a :class:`~pydl.nn.Module` lists in ``parameters()``.

    Wraps the array without copying it (a NumPy or CuPy array, or another
    Tensor's array); optimizers update ``.data`` in place.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad: bool = True):
        import numpy as np

        if data is None:
            data = np.empty(0, np.float32)
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, proto):
        return (Parameter, (self.data, self.requires_grad))
