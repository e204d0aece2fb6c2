"""Identity, Linear, Flatten, Unflatten: torch 2.13's, on pydl's ``linear`` op."""
from __future__ import annotations

import math
import numbers

from . import functional as F
from . import init
from ._factory import empty_param, integer, place
from .module import Module

__all__ = ["Identity", "Linear", "Flatten", "Unflatten"]


class Identity(Module):
    """Returns its input; any constructor arguments are accepted and ignored (as torch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """``y = x @ weight.T + bias``: x (..., in_features) -> (..., out_features).

    weight (out_features, in_features) and bias (out_features,) start uniform in
    +-1/sqrt(in_features) (torch's kaiming_uniform_ with a = sqrt(5)).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_features = integer("in_features", in_features, 0)
        self.out_features = integer("out_features", out_features, 0)
        self.weight = empty_param((self.out_features, self.in_features), dtype)
        if bias:
            self.bias = empty_param((self.out_features,), dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()
        place(self, device)

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _dim(d: int, ndim: int) -> int:
    """``d`` in [-ndim, ndim) as a non-negative dim, or torch's IndexError (a 0-d tensor
    counts as 1-D). Tensor.flatten/unflatten wrap an out-of-range dim silently."""
    n = max(ndim, 1)
    if not -n <= d < n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {d})")
    return d % n


class Flatten(Module):
    """Flatten dims ``start_dim`` .. ``end_dim`` into one (a reshape: no copy)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim = integer("start_dim", start_dim)
        self.end_dim = integer("end_dim", end_dim)

    def forward(self, input):
        return input.flatten(_dim(self.start_dim, input.ndim), _dim(self.end_dim, input.ndim))

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Expand dim ``dim`` into ``unflattened_size`` (one entry may be -1)."""

    def __init__(self, dim: int, unflattened_size):
        super().__init__()
        if isinstance(dim, str):
            raise NotImplementedError("Unflatten: named dimensions (a str dim) are not supported; pass an int")
        self.dim = integer("dim", dim)
        if not isinstance(unflattened_size, (tuple, list)):
            raise TypeError(f"unflattened_size must be a tuple of ints, but found type "
                            f"{type(unflattened_size).__name__}")
        for i, s in enumerate(unflattened_size):
            if not isinstance(s, numbers.Integral) or isinstance(s, bool):
                raise TypeError(f"unflattened_size must be tuple of ints, but found element of type "
                                f"{type(s).__name__} at pos {i}")
        self.unflattened_size = unflattened_size

    def forward(self, input):
        sizes = tuple(int(s) for s in self.unflattened_size)
        d = _dim(self.dim, input.ndim)
        known = math.prod(s for s in sizes if s != -1)
        if sizes.count(-1) > 1 or (-1 not in sizes and known != input.shape[d]) \
                or (-1 in sizes and (known == 0 or input.shape[d] % known)):
            raise ValueError(f"Unflatten: unflattened_size {sizes} does not match the size "
                             f"{input.shape[d]} of input dim {self.dim} (input shape {input.shape})")
        return input.unflatten(d, sizes)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
