"""``Optimizer``: parameter groups, per-parameter state and torch's state_dict layout.

An optimizer holds ``param_groups`` (a list of dicts: ``"params"``, a list of
leaf Tensors, plus that group's hyper-parameters) and ``state`` (a dict keyed
by the parameter object, holding its buffers). ``step()`` updates every
parameter's ``.data`` in place from its ``.grad`` (parameters whose grad is
None are skipped). Names, defaults, error messages and the update formulas
are those of ``torch.optim`` 2.13, so a ``state_dict`` converts key by key
(tensors <-> arrays) between the two.

Each optimizer's update is written twice: a readable array-module version
(NumPy or CuPy, every ufunc writing into the state or into a small
per-optimizer workspace, so a step allocates nothing once warm) -- the
reference -- and, for Adam/AdamW/SGD on contiguous float32/float64 NumPy
arrays, one fused Numba loop per parameter (``pydl.optim._fused``) that reads
each array once. ``fused=False`` forces the reference path; the tests check
both against torch.

Cost of one ``step()``, float32, grads set once, median ms of interleaved
runs in one process (``python -m pydl.optim._bench``; AMD EPYC, 2 vCPUs
shared with other jobs, NumPy 2.4, Numba 0.68, torch 2.13 CPU at its default
2 threads; pydl's fused loop uses one)::

    parameters                 pydl fused   pydl reference  torch.optim  torch foreach=True
    Adam, MLP 784-256-10 (0.2M)  0.13-0.15    0.33-0.45       0.26-0.46    0.25-0.47
    Adam, 9.97M                  7.2-16       27-79           39-335       25-280
    SGD m=0.9, MLP 784-256-10    0.044-0.058  0.083-0.12      0.086-0.16   0.082-0.16
    SGD m=0.9, 9.97M             5.7-13.5     12.8-31         7.0-88       6.5-77

Ranges: the quietest and the busiest of four runs (load average 0.7 to 5 on
2 vCPUs); torch's two threads suffer most from a busy neighbour, so compare
within a run. In the quietest run, Adam at 9.97M: fused 7.2 ms, torch 39
(foreach 25); SGD: fused 5.7, torch 7.0. The fused Adam loop reads p, g, m, v
and writes p, m, v: 28 bytes per float32 parameter, 280 MB for 10M, so 7 ms
is ~40 GB/s, what one core streams here (a second Numba thread measured no
faster); the reference's ~12 ufunc passes cost 4-5x that. Python overhead per
parameter tensor: ~5 us fused, ~10 us reference, ~40 us torch.optim.Adam.
"""
from __future__ import annotations

import copy
import functools
import numbers
from collections import defaultdict

import numpy as np

from .. import _array
from ..autograd import Tensor, enable_grad

__all__ = ["Optimizer", "required"]


class _Required:
    """Marks a hyper-parameter every parameter group must give (no default)."""

    def __repr__(self):
        return "<required parameter>"


required = _Required()


_FUSABLE = (np.dtype(np.float32), np.dtype(np.float64))


def _fusable(*arrays) -> bool:
    """True when every array is a C-contiguous NumPy array of one float32/float64 dtype:
    what the fused Numba loops take."""
    dt = arrays[0].dtype
    if dt not in _FUSABLE:
        return False
    return all(type(a) is np.ndarray and a.dtype == dt and a.flags.c_contiguous for a in arrays)


def _kernels():
    """The fused Numba loops (``pydl.optim._fused``), imported at the first fused step."""
    from . import _fused

    return _fused


def _grad(p):
    """The gradient array of ``p`` (None when it has none)."""
    g = p.grad
    if isinstance(g, Tensor):
        g = g.data
    return g



_LABEL = {"lr": "learning rate", "eps": "epsilon value"}


def check_nonnegative(group: dict, *keys: str) -> None:
    """torch's "Invalid <name> value: <v>" ValueError for the first of ``keys`` below 0."""
    for k in keys:
        if not 0.0 <= group[k]:
            raise ValueError(f"Invalid {_LABEL.get(k, k + ' value')}: {group[k]}")

class Optimizer:
    """Base class: ``Optimizer(params, defaults)``.

    ``params`` is an iterable of Tensors (one group), of ``(name, Tensor)``
    pairs, or of dicts (one group each: ``{"params": [...], "lr": ...}``); a
    group's missing hyper-parameters come from ``defaults``. Subclasses
    implement ``step`` and may override ``_validate_group`` (called for every
    group, so a bad value in a group dict is refused too, where torch checks
    only the constructor's arguments).
    """

    def __init__(self, params, defaults: dict):
        self.defaults = defaults
        if not any(v is required for v in defaults.values()):
            self._validate_group(defaults)  # the constructor's values first, as torch
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors "
                            f"or dicts, but got {type(params).__module__}.{type(params).__name__}")
        if isinstance(params, (set, frozenset)):  # torch takes a set here (and refuses one in a group)
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the "
                            "ordering of tensors in sets will change between runs. Please use a list instead.")
        self.state: defaultdict = defaultdict(dict)  # parameter -> its buffers, as torch's
        self.param_groups: list[dict] = []
        self._workspace: dict = {}
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __init_subclass__(cls, **kwargs):
        # Mark every call of a subclass's step, so a scheduler stepped first can warn (as torch).
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("step")
        if step is not None and not getattr(step, "_marks_opt_called", False):
            @functools.wraps(step)
            def marked(self, *args, **kw):
                self._opt_called = True
                return step(self, *args, **kw)

            marked._marks_opt_called = True
            cls.step = marked

    # -- groups ----------------------------------------------------------------------
    def _validate_group(self, group: dict) -> None:
        """Raise ValueError for a bad hyper-parameter (subclasses)."""

    def add_param_group(self, param_group: dict) -> None:
        """Add a group (a dict with ``"params"`` and optional hyper-parameters)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' entry")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the "
                            "ordering of tensors in sets will change between runs. Please use a list instead.")
        else:
            params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        params = [p[1] if isinstance(p, tuple) else p for p in params]
        if names and len(names) != len(params):
            raise ValueError("all optimizer params should be with/without names. Some param names are missing")

        group = dict(param_group)
        group["params"] = params
        if names:
            group["param_names"] = names
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is "
                                f"{type(p).__module__}.{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            group.setdefault(name, default)
        self._validate_group(group)

        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        seen = set()
        for g in self.param_groups:
            seen.update(id(p) for p in g["params"])
            if ("param_names" in g) != ("param_names" in group):
                which = "with names" if "param_names" in group else "without names"
                raise ValueError("all optimizer param groups should be with/without names. "
                                 f"cannot add param group {which} to the optimizer")
        if not seen.isdisjoint(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)
        self._init_group_state(group)

    def _init_group_state(self, group: dict) -> None:
        """State a subclass creates when a group is added (Adagrad's accumulators)."""

    # -- step / zero_grad -------------------------------------------------------------
    def step(self, closure=None):
        """Update the parameters once; return ``closure()`` (run first, with grad enabled) or None."""
        raise NotImplementedError

    @staticmethod
    def _run_closure(closure):
        if closure is None:
            return None
        with enable_grad():
            return closure()

    def _params_with_grad(self, group):
        """(param, grad array, state dict) for each parameter of ``group`` that has a grad."""
        for p in group["params"]:
            g = _grad(p)
            if g is not None:
                yield p, g, self.state.setdefault(p, {})

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Set every grad to None (default), or fill it with zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    _grad(p).fill(0)

    def _scratch(self, like, count: int):
        """``count`` scratch arrays shaped like ``like`` (same module, device and dtype),
        views of flat buffers kept across steps and shared by all parameters."""
        key = (_array.kind(like), str(getattr(like, "device", "")), like.dtype)
        bufs = self._workspace.get(key, [])
        if len(bufs) < count or bufs[0].size < like.size:
            xp = _array.module(like)
            n = max([like.size] + [b.size for b in bufs])
            bufs = [xp.empty(n, like.dtype) for _ in range(max(count, len(bufs)))]
            self._workspace[key] = bufs
        return [b[: like.size].reshape(like.shape) for b in bufs[:count]]

    # -- state_dict ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"state": {index: {name: array or number}}, "param_groups": [{..., "params": [index]}]}``.

        Indices number the parameters in group order, as torch's. Arrays are
        copies (torch returns its live buffers): the dict is a snapshot that
        later steps do not change, and loading it never shares buffers.
        """
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in g.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in g["params"]]
            groups.append(packed)
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                s = self.state.get(p)
                if s:
                    state[index[id(p)]] = {k: (v.copy() if _array.kind(v) else copy.deepcopy(v))
                                           for k, v in s.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a dict made by :meth:`state_dict` (this optimizer's, another's of the same
        structure, or torch's converted key by key). Arrays (or anything ``np.asarray``
        takes, such as CPU torch tensors) are copied to each parameter's array module,
        device and float dtype; ``step`` becomes a 0-d float32 array."""
        groups = self.param_groups
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(groups)}")
        for i, (g, sg) in enumerate(zip(groups, saved_groups)):
            if len(g["params"]) != len(sg["params"]):
                raise ValueError(f"loaded state dict contains a parameter group that doesn't match the size of "
                                 f"optimizer's group: group {i} has {len(sg['params'])} parameters in the "
                                 f"state dict, {len(g['params'])} in the optimizer")
        id_map = {}
        for g, sg in zip(groups, saved_groups):
            id_map.update(zip(sg["params"], g["params"]))
        state = defaultdict(dict)
        for k, values in state_dict["state"].items():
            if k not in id_map:
                raise ValueError(f"loaded state dict has state for parameter {k!r}, which is in none of its "
                                 f"parameter groups")
            p = id_map[k]
            state[p] = {name: self._cast_state(p, name, v) for name, v in values.items()}
        new_groups = []
        for g, sg in zip(groups, saved_groups):
            sg["params"] = g["params"]
            if "param_names" in g and "param_names" not in sg:
                sg["param_names"] = g["param_names"]
            for name, default in self.defaults.items():
                sg.setdefault(name, default)
            new_groups.append(sg)
        self.state = state
        self.param_groups = new_groups
        self._after_load()

    def _after_load(self) -> None:
        """Fix-ups after load_state_dict (AdamW keeps decoupled weight decay)."""

    @staticmethod
    def _cast_state(p, name, value):
        if name == "step":
            return np.array(float(np.asarray(value)), dtype=np.float32)
        if isinstance(value, (numbers.Number, str, type(None))):
            return value
        data = p.data
        xp = _array.module(data)
        arr = value if _array.kind(value) else np.asarray(value)
        if _array.kind(arr) == "cupy" and xp is np:
            arr = arr.get()
        if tuple(arr.shape) != tuple(data.shape):
            raise ValueError(f"loaded state dict: state {name!r} has shape {tuple(arr.shape)}, "
                             f"its parameter has shape {tuple(data.shape)}")
        dtype = data.dtype if arr.dtype.kind == "f" and data.dtype.kind == "f" else arr.dtype
        return xp.array(arr, dtype=dtype, copy=True)

    # -- helpers for the subclasses' reference updates ----------------------------------
    def _effective_grad(self, d, g, maximize, weight_decay):
        """``-g if maximize else g``, plus ``weight_decay * d``: ``g`` itself when neither
        applies, else a scratch array (the parameter's ``.grad`` is never changed)."""
        if not maximize and weight_decay == 0:
            return g
        xp = _array.module(d)
        (t,) = self._scratch(d, 1)  # slot 0 of the workspace: the effective gradient
        if weight_decay != 0:
            xp.multiply(d, weight_decay, out=t)
            # -g + wd*d and wd*d - g round identically
            (xp.subtract if maximize else xp.add)(t, g, out=t)
        else:
            xp.negative(g, out=t)
        return t

    @staticmethod
    def _lerp_(a, end, weight, tmp):
        """``a += weight * (end - a)`` in place, in torch's two forms (the second for
        weight >= 0.5 keeps ``a`` exact at weight 1)."""
        xp = _array.module(a)
        xp.subtract(end, a, out=tmp)
        if abs(weight) < 0.5:
            tmp *= weight
            a += tmp
        else:
            one, w = a.dtype.type(1), a.dtype.type(weight)  # 1 - weight in the array's precision
            tmp *= one - w
            xp.subtract(end, tmp, out=a)

    @staticmethod
    def _new_step():
        """The step counter: a 0-d float32 array on the host, as torch keeps it."""
        return np.zeros((), np.float32)

    def __repr__(self):
        lines = [self.__class__.__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group) if k != "params"]
        return "\n".join(lines) + "\n)"
