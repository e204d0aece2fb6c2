"""MaxPool2d, AvgPool2d, AdaptiveAvgPool2d: torch 2.13's, on pydl's pooling ops.

Each takes x (N, C, H, W) or unbatched (C, H, W), as torch.
"""
from __future__ import annotations

import numbers

from . import functional as F
from ._factory import integer, window
from .module import Module

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]


def _batched(name, input, f):
    """``f`` on 4-D input; a 3-D (C, H, W) input runs as a batch of one, as torch."""
    if input.ndim == 3:
        return f(input.unsqueeze(0)).squeeze(0)
    if input.ndim != 4:
        raise ValueError(f"{name}: expected 3D (unbatched) or 4D (batched) input, got {input.ndim}D input "
                         f"of shape {tuple(input.shape)}")
    return f(input)


def _flag(name, v):
    if not isinstance(v, bool):
        raise TypeError(f"{name} must be a bool, got {type(v).__name__} {v!r}")
    return v


class MaxPool2d(Module):
    """Maximum over each (dilated) window; ``stride=None`` means ``kernel_size``."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False):
        super().__init__()
        if return_indices:
            raise NotImplementedError(
                "MaxPool2d(return_indices=True) is not supported by pydl (no MaxUnpool2d); the max_pool2d op "
                "keeps the indices for its backward only")
        self.kernel_size = window("kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else window("stride", stride, 1)
        self.padding = window("padding", padding, 0)
        self.dilation = window("dilation", dilation, 1)
        self.return_indices = False
        self.ceil_mode = _flag("ceil_mode", ceil_mode)

    def forward(self, input):
        return _batched("MaxPool2d", input, lambda x: F.max_pool2d(
            x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode))

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Mean over each window; ``stride=None`` means ``kernel_size``."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override=None):
        super().__init__()
        self.kernel_size = window("kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else window("stride", stride, 1)
        self.padding = window("padding", padding, 0)
        self.ceil_mode = _flag("ceil_mode", ceil_mode)
        self.count_include_pad = _flag("count_include_pad", count_include_pad)
        if divisor_override is not None:
            divisor_override = integer("divisor_override", divisor_override)
            if divisor_override == 0:
                raise ValueError("divisor must be not zero")
        self.divisor_override = divisor_override

    def forward(self, input):
        return _batched("AvgPool2d", input, lambda x: F.avg_pool2d(
            x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
            self.divisor_override))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average into ``output_size`` (an int, or a pair whose entries may be None: keep that size)."""

    def __init__(self, output_size):
        super().__init__()
        if isinstance(output_size, (tuple, list)):
            if len(output_size) != 2:
                raise ValueError(f"output_size must be an int or a pair, got {tuple(output_size)!r}")
            for o in output_size:
                if o is not None:
                    integer("output_size", o, 0)
            output_size = tuple(output_size)
        elif not isinstance(output_size, numbers.Integral) or isinstance(output_size, bool):
            raise TypeError(f"output_size must be an int or a pair, got {type(output_size).__name__}")
        else:
            output_size = integer("output_size", output_size, 0)
        self.output_size = output_size

    def forward(self, input):
        return _batched("AdaptiveAvgPool2d", input, lambda x: F.adaptive_avg_pool2d(x, self.output_size))

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
