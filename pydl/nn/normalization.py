"""BatchNorm1d/2d, LayerNorm, GroupNorm, InstanceNorm2d, LocalResponseNorm: torch 2.13's,
on pydl's norm ops.

The running statistics are buffers (``running_mean``, ``running_var`` of the
parameters' dtype, ``num_batches_tracked`` int64 0-d); the ops update them in
place. ``momentum=None`` gives the cumulative moving average (the factor is
1 / num_batches_tracked), as torch.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np

from ..autograd import Tensor
from . import functional as F
from . import init
from ._factory import empty_param, float_dtype, integer, place
from .module import Module

__all__ = ["BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "InstanceNorm2d", "LocalResponseNorm"]


def _affine_params(m, shape, affine: bool, bias: bool, dtype):
    """``weight`` (and ``bias`` unless ``bias=False``) of ``shape`` when ``affine``, else None."""
    if affine:
        m.weight = empty_param(shape, dtype)
        if bias:
            m.bias = empty_param(shape, dtype)
        else:
            m.register_parameter("bias", None)
    else:
        m.register_parameter("weight", None)
        m.register_parameter("bias", None)


def _reset_affine(m):
    """torch's affine init: weight ones, bias zeros."""
    if m.weight is not None:
        init.ones_(m.weight)
        if m.bias is not None:
            init.zeros_(m.bias)


class _NormBase(Module):
    """The parameters and buffers BatchNorm and InstanceNorm share (torch's _NormBase)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None, *, bias: bool = True):
        super().__init__()
        self.num_features = integer("num_features", num_features, 1)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        _affine_params(self, (self.num_features,), affine, bias, dtype)
        if track_running_stats:
            dt = float_dtype(dtype)
            self.register_buffer("running_mean", Tensor(np.zeros(self.num_features, dt)))
            self.register_buffer("running_var", Tensor(np.ones(self.num_features, dt)))
            self.register_buffer("num_batches_tracked", Tensor(np.zeros((), np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()
        place(self, device)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self):
        self.reset_running_stats()
        _reset_affine(self)

    def _check_input_dim(self, input):
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class _BatchNorm(_NormBase):
    def forward(self, input):
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        counting = self.training and self.track_running_stats and self.num_batches_tracked is not None
        if counting and self.momentum is None:
            factor = 1.0 / float(int(self.num_batches_tracked.item()) + 1)
        # eval mode normalizes with the running statistics when there are any
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        use_buffers = not self.training or self.track_running_stats
        out = F.batch_norm(input, self.running_mean if use_buffers else None,
                           self.running_var if use_buffers else None, self.weight, self.bias,
                           bn_training, factor, self.eps)
        if counting:  # after the op: a rejected input counts no batch
            self.num_batches_tracked.add_(1)
        return out


class BatchNorm1d(_BatchNorm):
    """Batch normalization of x (N, C) or (N, C, L) over N (and L), per channel C = num_features."""

    def _check_input_dim(self, input):
        if input.ndim not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {input.ndim}D input)")


class BatchNorm2d(_BatchNorm):
    """Batch normalization of x (N, C, H, W) over N, H, W, per channel C = num_features."""

    def _check_input_dim(self, input):
        if input.ndim != 4:
            raise ValueError(f"expected 4D input (got {input.ndim}D input)")


class InstanceNorm2d(_NormBase):
    """Normalize each (sample, channel) of x (N, C, H, W) or unbatched (C, H, W) over H, W.

    Defaults as torch: no affine parameters and no running statistics; with
    ``track_running_stats`` the eval mode normalizes with them.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1, affine: bool = False,
                 track_running_stats: bool = False, device=None, dtype=None, *, bias: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)

    def _check_input_dim(self, input):
        if input.ndim not in (3, 4):
            raise ValueError(f"expected 3D or 4D input (got {input.ndim}D input)")

    def _apply_instance_norm(self, input):
        return F.instance_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                               self.training or not self.track_running_stats,
                               self.momentum if self.momentum is not None else 0.0, self.eps)

    def forward(self, input):
        self._check_input_dim(input)
        feature_dim = input.ndim - 3
        if input.shape[feature_dim] != self.num_features:
            if self.affine:
                raise ValueError(f"expected input's size at dim={feature_dim} to match num_features "
                                 f"({self.num_features}), but got: {input.shape[feature_dim]}.")
            warnings.warn(f"input's size at dim={feature_dim} does not match num_features. You can silence "
                          f"this warning by not passing in num_features, which is not used because affine=False")
        if input.ndim == 3:
            return self._apply_instance_norm(input.unsqueeze(0)).squeeze(0)
        return self._apply_instance_norm(input)


class LayerNorm(Module):
    """Normalize over the trailing ``normalized_shape`` dims; weight (ones) and bias (zeros)
    of that shape when ``elementwise_affine`` (no bias with ``bias=False``)."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        if not isinstance(normalized_shape, (tuple, list)):
            raise TypeError(f"normalized_shape must be an int or a tuple of ints, "
                            f"got {type(normalized_shape).__name__}")
        self.normalized_shape = tuple(integer("normalized_shape", n, 0) for n in normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        _affine_params(self, self.normalized_shape, elementwise_affine, bias, dtype)
        self.reset_parameters()
        place(self, device)

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class GroupNorm(Module):
    """Normalize each sample's ``num_groups`` groups of channels of x (N, C, ...);
    per-channel weight (ones) and bias (zeros) when ``affine`` (no bias with ``bias=False``)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device=None, dtype=None, *, bias: bool = True):
        super().__init__()
        num_groups = integer("num_groups", num_groups, 1)
        num_channels = integer("num_channels", num_channels, 1)
        if num_channels % num_groups != 0:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.num_channels = num_groups, num_channels
        self.eps = eps
        self.affine = affine
        _affine_params(self, (num_channels,), affine, bias, dtype)
        self.reset_parameters()
        place(self, device)

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, input):
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class LocalResponseNorm(Module):
    """x / (k + alpha/size * sum of x^2 over ``size`` neighbouring channels)^beta, x (N, C, ...) of 3+ dims."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size = integer("size", size, 1)
        self.alpha, self.beta, self.k = alpha, beta, k

    def forward(self, input):
        return F.local_response_norm(input, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
