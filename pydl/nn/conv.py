"""Conv2d: torch 2.13's, on pydl's ``conv2d`` op (zero padding only)."""
from __future__ import annotations

import math

from . import functional as F
from . import init
from ._factory import empty_param, integer, pair, place
from .module import Module

__all__ = ["Conv2d"]

_PADDING_STRINGS = ("same", "valid")
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class Conv2d(Module):
    """2-D cross-correlation over x (N, C, H, W) or unbatched (C, H, W).

    weight (out_channels, in_channels/groups, kH, kW) and bias (out_channels,)
    start uniform in +-1/sqrt(fan_in), fan_in = in_channels/groups * kH * kW
    (torch's kaiming_uniform_ with a = sqrt(5)). ``padding`` is an int, a pair,
    "valid" (no padding) or "same" (stride 1 only: the output has the input's
    size; an odd total padding puts the extra row/column at the bottom/right,
    as torch). Only ``padding_mode="zeros"``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None):
        super().__init__()
        in_channels = integer("in_channels", in_channels, 1)
        out_channels = integer("out_channels", out_channels, 1)
        kernel_size = pair("kernel_size", kernel_size, 1)
        stride = pair("stride", stride, 1)
        dilation = pair("dilation", dilation, 1)
        groups = integer("groups", groups)
        if groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups != 0:
            raise ValueError(f"in_channels must be divisible by groups (in_channels={in_channels}, groups={groups})")
        if out_channels % groups != 0:
            raise ValueError(f"out_channels must be divisible by groups (out_channels={out_channels}, "
                             f"groups={groups})")
        if isinstance(padding, str):
            if padding not in _PADDING_STRINGS:
                raise ValueError(f"Invalid padding string {padding!r}, should be one of {set(_PADDING_STRINGS)}")
            if padding == "same" and any(s != 1 for s in stride):
                raise ValueError("padding='same' is not supported for strided convolutions")
        else:
            padding = pair("padding", padding, 0)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {set(_PADDING_MODES)}, but got "
                             f"padding_mode={padding_mode!r}")
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode={padding_mode!r} is not supported by pydl's Conv2d "
                             f"(only 'zeros'); pad the input yourself and use padding=0")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.transposed, self.output_padding = False, (0, 0)
        self.groups, self.padding_mode = groups, padding_mode
        # torch's layout of the same padding: (left, right, top, bottom)
        if isinstance(padding, str):
            rev = [0, 0, 0, 0]
            if padding == "same":
                for d, k, i in zip(dilation, kernel_size, (1, 0)):
                    total = d * (k - 1)
                    rev[2 * i], rev[2 * i + 1] = total // 2, total - total // 2
            self._reversed_padding_repeated_twice = rev
        else:
            self._reversed_padding_repeated_twice = [p for p in reversed(padding) for _ in range(2)]
        self.weight = empty_param((out_channels, in_channels // groups) + kernel_size, dtype)
        if bias:
            self.bias = empty_param((out_channels,), dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()
        place(self, device)

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    def _conv_forward(self, input, weight, bias):
        padding = self.padding
        if isinstance(padding, str):
            left, right, top, bottom = self._reversed_padding_repeated_twice
            if (right - left) or (bottom - top):  # odd total: the extra one at the right/bottom
                input = F.pad(input, (0, right - left, 0, bottom - top))
            padding = (top, left)
        return F.conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups)

    def forward(self, input):
        if input.ndim == 3:  # unbatched (C, H, W), as torch
            return self._conv_forward(input.unsqueeze(0), self.weight, self.bias).squeeze(0)
        if input.ndim != 4:
            raise ValueError(f"Conv2d: expected 3D (unbatched) or 4D (batched) input, got {input.ndim}D input "
                             f"of shape {input.shape}")
        return self._conv_forward(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s
