"""Losses: torch 2.13's loss modules, on pydl's loss ops.

Each takes ``reduction`` ("none", "mean", "sum"; KLDivLoss also "batchmean")
and torch's legacy ``size_average`` / ``reduce`` (which, when given, set the
reduction with torch's warning). Class and element weights are buffers
(``weight``, ``pos_weight``), in the state_dict when given, as torch.
"""
from __future__ import annotations

import numbers
import warnings

from .. import _array
from ..autograd import Tensor
from . import functional as F
from .module import Module

__all__ = ["L1Loss", "MSELoss", "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss",
           "GaussianNLLLoss", "KLDivLoss"]

_REDUCTIONS = ("none", "mean", "sum")


def _legacy_reduction(size_average, reduce) -> str:
    """torch's reading of the deprecated size_average / reduce pair."""
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    ret = "mean" if size_average and reduce else ("sum" if reduce else "none")
    warnings.warn(f"size_average and reduce args will be deprecated, please use reduction='{ret}' instead.",
                  UserWarning, stacklevel=4)
    return ret


def _weight_buffer(name, w):
    """None, or a float Tensor (an array is wrapped, not copied)."""
    if w is None or isinstance(w, Tensor):
        t = w
    elif _array.kind(w) is not None:
        t = Tensor(w)
    else:
        raise TypeError(f"{name} must be a Tensor, an array or None, got {type(w).__name__}")
    if t is not None and t.dtype.kind != "f":
        raise TypeError(f"{name} must be a float tensor, got dtype {t.dtype}")
    return t


class _Loss(Module):
    _options = _REDUCTIONS

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__()
        if size_average is not None or reduce is not None:
            reduction = _legacy_reduction(size_average, reduce)
        if not isinstance(reduction, str) or reduction not in self._options:
            raise ValueError(f"{reduction!r} is not a valid value for reduction: expected one of "
                             f"{', '.join(map(repr, self._options))}")
        self.reduction = reduction


class _WeightedLoss(_Loss):
    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", _weight_buffer("weight", weight))


class L1Loss(_Loss):
    """|input - target|, reduced; input and target of one shape."""

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(size_average, reduce, reduction)

    def forward(self, input, target):
        return F.l1_loss(input, target, reduction=self.reduction)


class MSELoss(_Loss):
    """(input - target)^2, reduced; input and target of one shape."""

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(size_average, reduce, reduction)

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


def _ignore_index(v):
    if not isinstance(v, numbers.Integral) or isinstance(v, bool):
        raise TypeError(f"ignore_index must be an int, got {type(v).__name__} {v!r}")
    return int(v)


class CrossEntropyLoss(_WeightedLoss):
    """log_softmax over dim 1 of input (N, C, ...) against class indices (N, ...) of any
    integer dtype, or class probabilities of input's shape; optional class ``weight`` (C,)."""

    def __init__(self, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = _ignore_index(ignore_index)
        if not isinstance(label_smoothing, numbers.Real) or isinstance(label_smoothing, bool):
            raise TypeError(f"label_smoothing must be a float, got {type(label_smoothing).__name__}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, input, target):
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(_WeightedLoss):
    """-input[i, target[i]] over log-probabilities input (N, C, ...) and class indices (N, ...)."""

    def __init__(self, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = _ignore_index(ignore_index)

    def forward(self, input, target):
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class BCELoss(_WeightedLoss):
    """Binary cross entropy of probabilities input in [0, 1]; ``weight`` broadcasts to input."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(weight, size_average, reduce, reduction)

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Binary cross entropy of sigmoid(input), from the logits; ``weight`` and ``pos_weight``
    (the positive class's weight, usually (C,)) broadcast to input."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean", pos_weight=None):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", _weight_buffer("weight", weight))
        self.register_buffer("pos_weight", _weight_buffer("pos_weight", pos_weight))

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction,
                                                  pos_weight=self.pos_weight)


class GaussianNLLLoss(_Loss):
    """0.5 * (log(max(var, eps)) + (input - target)^2 / max(var, eps)) (+ const if ``full``)."""

    def __init__(self, *, full: bool = False, eps: float = 1e-6, reduction: str = "mean"):
        super().__init__(None, None, reduction)
        if not isinstance(full, bool):
            raise TypeError(f"full must be a bool, got {type(full).__name__}")
        if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not eps >= 0:
            raise ValueError(f"eps must be a number >= 0, got {eps!r}")
        self.full = full
        self.eps = eps

    def forward(self, input, target, var):
        return F.gaussian_nll_loss(input, target, var, full=self.full, eps=self.eps, reduction=self.reduction)


class KLDivLoss(_Loss):
    """Pointwise KL divergence target * (log target - input), input being log-probabilities
    (``log_target``: the target too); "batchmean" divides the sum by the batch size."""

    _options = _REDUCTIONS + ("batchmean",)

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean", log_target: bool = False):
        super().__init__(size_average, reduce, reduction)
        if not isinstance(log_target, bool):
            raise TypeError(f"log_target must be a bool, got {type(log_target).__name__}")
        self.log_target = log_target

    def forward(self, input, target):
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)
