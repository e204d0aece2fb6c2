"""``Module`` and the containers (Sequential, ModuleList, ModuleDict).

As in torch: a Module registers parameters, buffers and submodules by
attribute assignment; ``state_dict`` keys are the attribute paths
(``features.0.weight``); ``train()``/``eval()`` set ``training`` on the whole
tree. No hooks: a thin layer API.
"""
from __future__ import annotations

import operator
from collections import OrderedDict

import numpy as np

from .. import _array
from ..autograd import Tensor, no_grad
from .parameter import Parameter

__all__ = ["Module", "Sequential", "ModuleList", "ModuleDict"]


class Module:
    """Base class of every layer and model."""

    training: bool

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- registration ------------------------------------------------------------------
    def __setattr__(self, name, value):
        d = self.__dict__
        if "_parameters" not in d:
            if isinstance(value, (Parameter, Module)):
                raise AttributeError(f"cannot assign {type(value).__name__} {name!r} "
                                     f"before Module.__init__() is called")
            object.__setattr__(self, name, value)  # a plain attribute: allowed before __init__, as torch
            return
        params, bufs, mods = d["_parameters"], d["_buffers"], d["_modules"]
        if isinstance(value, Parameter):
            bufs.pop(name, None)
            d["_non_persistent"].discard(name)
            mods.pop(name, None)
            d.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            bufs.pop(name, None)
            d["_non_persistent"].discard(name)
            d.pop(name, None)
            mods[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} "
                                f"(a Parameter or None expected)")
            params[name] = None
        elif name in bufs:
            if value is not None and not isinstance(value, Tensor):
                if _array.kind(value) is None:
                    raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r} "
                                    f"(a Tensor, an array or None expected)")
                value = Tensor(value)  # as register_buffer: an array becomes the buffer's Tensor
            bufs[name] = value
        elif name in mods:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module {name!r}")
            mods[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            t = d.get(table)
            if t is not None and name in t:
                return t[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute {name!r}")

    def __delattr__(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None):
        _check_name(self, name, "_parameters")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be a Parameter or None, got {type(param).__name__}")
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor, persistent: bool = True):
        _check_name(self, name, "_buffers")
        if tensor is not None and not isinstance(tensor, Tensor):
            if _array.kind(tensor) is None:
                raise TypeError(f"register_buffer: {name!r} must be a Tensor, an array or None, "
                                f"got {type(tensor).__name__}")
            tensor = Tensor(tensor)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: "Module | None"):
        _check_name(self, name, "_modules")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module or None, got {type(module).__name__}")
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target: str) -> "Module":
        mod = self
        for part in target.split(".") if target else []:
            if part not in mod._modules:
                raise AttributeError(f"{type(mod).__name__} has no submodule {part!r} (in {target!r})")
            mod = mod._modules[part]
        return mod

    # -- iteration -----------------------------------------------------------------------
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        """(dotted path, module) for self and every submodule, depth first; a module reached
        twice is listed once unless ``remove_duplicate`` is False."""
        memo = set() if memo is None else memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(memo, prefix + ("." if prefix else "") + name, remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named(self, table: str, prefix: str, recurse: bool, remove_duplicate: bool = True):
        seen = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for mp, m in mods:
            for name, v in getattr(m, table).items():
                if v is None or id(v) in seen:
                    continue
                if remove_duplicate:
                    seen.add(id(v))
                yield mp + ("." if mp else "") + name, v

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """(dotted name, Parameter) in registration order, each shared parameter once
        (unless ``remove_duplicate`` is False)."""
        yield from self._named("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    # -- modes ---------------------------------------------------------------------------
    def train(self, mode: bool = True):
        if not isinstance(mode, bool):
            raise TypeError(f"train: mode must be a bool, got {type(mode).__name__}")
        self.training = mode
        for m in self.children():
            m.train(mode)  # through each child's own train(), which a layer may override
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True):
        for p in self.parameters():
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.fill(0)

    def apply(self, fn):
        """Call ``fn`` on every submodule (children first) and on self, as torch."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def _apply_arrays(self, fn):
        with no_grad():
            for m in self.modules():
                for table in (m._parameters, m._buffers):
                    for k, v in table.items():
                        if v is None:
                            continue
                        v.data = fn(v.data)
                        if v.grad is not None:
                            v.grad = fn(v.grad)
        return self

    def to(self, device=None, dtype=None):
        """Move every parameter and buffer to ``"cpu"``/``"cuda"`` and/or cast the float
        ones to ``dtype``, in place (the Parameter objects stay the same)."""
        if isinstance(device, (np.dtype, type)) and dtype is None:
            device, dtype = None, device

        def f(a):
            if device is not None:
                dev = str(device).split(":")[0]
                if dev == "cuda" and _array.kind(a) != "cupy":
                    import cupy
                    a = cupy.asarray(a)
                elif dev == "cpu" and _array.kind(a) == "cupy":
                    a = a.get()
                elif dev not in ("cpu", "cuda"):
                    raise ValueError(f"to: device must be 'cpu' or 'cuda', got {device!r}")
            if dtype is not None and a.dtype.kind == "f":
                a = a.astype(dtype, copy=False)
            return a

        return self._apply_arrays(f)

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    # -- state ---------------------------------------------------------------------------
    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False):
        """Every parameter and persistent buffer by dotted name: arrays (``keep_vars``:
        the Tensors), the keys, shapes and dtypes of the same torch module."""
        out = OrderedDict() if destination is None else destination
        for k, v in self._parameters.items():
            if v is not None:
                out[prefix + k] = v if keep_vars else v.data
        for k, v in self._buffers.items():
            if v is not None and k not in self._non_persistent:
                out[prefix + k] = v if keep_vars else v.data
        # as torch: every path is a key, so a module shared by two parents appears under both
        for name, m in self._modules.items():
            if m is not None:
                m.state_dict(destination=out, prefix=prefix + name + ".", keep_vars=keep_vars)
        return out

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Copy arrays (or Tensors, or anything with ``.numpy()``, such as torch tensors) into
        the parameters and buffers. Every key, shape and dtype is checked before anything
        is written: a bad state_dict leaves the module as it was. Returns
        ``(missing_keys, unexpected_keys)``; with ``strict`` either is a KeyError."""
        own = self.state_dict(keep_vars=True)
        given = {k: _host_or_device_array(k, v) for k, v in state_dict.items()}
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        if strict and (missing or unexpected):
            msg = []
            if missing:
                msg.append(f"missing keys: {', '.join(missing)}")
            if unexpected:
                msg.append(f"unexpected keys: {', '.join(unexpected)}")
            raise KeyError(f"load_state_dict for {type(self).__name__}: " + "; ".join(msg))
        plan = []
        for k, t in own.items():
            if k not in given:
                continue
            src = given[k]
            if tuple(src.shape) != tuple(t.data.shape):
                raise ValueError(f"load_state_dict: {k!r} has shape {tuple(src.shape)}, "
                                 f"the module expects {tuple(t.data.shape)}")
            if src.dtype != t.data.dtype and not (src.dtype.kind == t.data.dtype.kind == "f") \
                    and not (src.dtype.kind in "iu" and t.data.dtype.kind in "iu"):
                raise TypeError(f"load_state_dict: {k!r} has dtype {src.dtype}, the module expects {t.data.dtype}")
            plan.append((t, src))
        for t, src in plan:
            if _array.kind(src) == "cupy" and _array.kind(t.data) == "numpy":
                src = src.get()
            if assign:
                t.data = _array.module(t.data).asarray(src).copy()
            else:
                t.data[...] = _array.module(t.data).asarray(src)
        return _IncompatibleKeys(missing, unexpected)

    # -- printing ------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def _get_name(self):
        return type(self).__name__

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines = extra.split("\n")
        for name, m in self._modules.items():
            body = repr(m).replace("\n", "\n  ")
            lines.append(f"({name}): {body}")
        main = self._get_name() + "("
        if lines:
            if len(lines) == 1 and not self._modules:
                main += lines[0]
            else:
                main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"

    def __dir__(self):
        return sorted(set(object.__dir__(self)) | set(self._parameters) | set(self._buffers) | set(self._modules))


class _IncompatibleKeys(tuple):
    def __new__(cls, missing, unexpected):
        t = super().__new__(cls, (missing, unexpected))
        t.missing_keys, t.unexpected_keys = missing, unexpected
        return t

    def __repr__(self):
        return f"<All keys matched successfully>" if not any(self) else \
            f"_IncompatibleKeys(missing_keys={self[0]}, unexpected_keys={self[1]})"


def _host_or_device_array(key, v):
    if isinstance(v, Tensor):
        return v.data
    if _array.kind(v) is not None:
        return v
    if hasattr(v, "detach") and hasattr(v, "numpy"):  # a torch tensor
        return v.detach().cpu().numpy()
    if isinstance(v, (int, float)):
        return np.asarray(v)
    raise TypeError(f"load_state_dict: {key!r} is a {type(v).__name__}, expected an array or a Tensor")


def _check_name(m, name, table):
    if "_parameters" not in m.__dict__:
        raise AttributeError("call Module.__init__() before registering parameters, buffers or modules")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not name or "." in name:
        raise KeyError(f"name must be non-empty and without '.', got {name!r}")
    for other in ("_parameters", "_buffers", "_modules"):
        if other != table and name in getattr(m, other):
            raise KeyError(f"attribute {name!r} already exists")
    if name in m.__dict__ or hasattr(type(m), name):  # a plain attribute, a method, a property
        raise KeyError(f"attribute {name!r} already exists")


# -- containers ----------------------------------------------------------------------------


class _ModuleSeq(Module):
    """What Sequential and ModuleList share: a numbered sequence of child modules."""

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __delitem__(self, idx):
        keys = list(self._modules)
        for k in (keys[idx] if isinstance(idx, slice) else [keys[_index_of(idx, len(self))]]):
            del self._modules[k]
        _renumber(self)

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def pop(self, index=-1):
        m = self[index]
        del self[index]
        return m


class Sequential(_ModuleSeq):
    """Modules called in order; ``Sequential(OrderedDict(name=module))`` names them."""

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], (OrderedDict, dict)):
            for k, m in args[0].items():
                self.add_module(k, m)
        else:
            for i, m in enumerate(args):
                self.add_module(str(i), m)

    def forward(self, x):
        mods = list(self._modules.values())
        i, n = 0, len(mods)
        while i < n:
            m = mods[i]
            act = _fused_activation(m, mods[i + 1]) if i + 1 < n else None
            if act is not None:
                # Linear then its activation: one op, the GEMM's epilogue applies the activation
                # (and its backward) in the same pass; the result is the same
                x = _functional().linear(x, m.weight, m.bias, activation=act)
                i += 2
            else:
                x = m(x)
                i += 1
        return x

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return self.__class__(OrderedDict(list(self._modules.items())[idx]))
        return list(self._modules.values())[_index_of(idx, len(self))]

    def __setitem__(self, idx, module):
        key = list(self._modules)[_index_of(idx, len(self))]
        setattr(self, key, module)

    def insert(self, index, module):
        _insert(self, index, module)
        return self


class ModuleList(_ModuleSeq):
    """A list of modules, registered as ``"0"``, ``"1"``, ... (their state_dict prefixes)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return self.__class__(list(self._modules.values())[idx])
        return self._modules[str(_index_of(idx, len(self)))]

    def __setitem__(self, idx, module):
        setattr(self, str(_index_of(idx, len(self))), module)

    def __iadd__(self, modules):
        return self.extend(modules)

    def insert(self, index, module):
        _insert(self, index, module)

    def forward(self, *args):
        raise NotImplementedError("ModuleList is a container; call its modules")

    def __repr__(self):
        # torch's: runs of equal modules print once, as "(0-2): 3 x Linear(...)"
        reprs = [repr(m) for m in self]
        if not reprs:
            return self._get_name() + "()"
        runs = []  # [first, last, repr]
        for i, r in enumerate(reprs):
            if runs and runs[-1][2] == r:
                runs[-1][1] = i
            else:
                runs.append([i, i, r])
        lines = []
        for first, last, r in runs:
            line = f"({first}): {r}" if first == last else f"({first}-{last}): {last - first + 1} x {r}"
            lines.append(line.replace("\n", "\n  "))
        return self._get_name() + "(\n  " + "\n  ".join(lines) + "\n)"


class ModuleDict(Module):
    """Modules by name, in insertion order (the names are their state_dict prefixes)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def update(self, modules):
        items = modules.items() if hasattr(modules, "items") else modules
        for kv in items:
            if len(kv) != 2:
                raise ValueError(f"ModuleDict.update: expected (name, module) pairs, got {kv!r}")
            self.add_module(*kv)

    def pop(self, key):
        return self._modules.pop(key)

    def clear(self):
        self._modules.clear()

    def forward(self, *args):
        raise NotImplementedError("ModuleDict is a container; call its modules")


def _renumber(container):
    """After a deletion: keys "0".."n-1" again, as torch (state_dict prefixes stay dense)."""
    mods = list(container._modules.values())
    container._modules.clear()
    for i, m in enumerate(mods):
        container._modules[str(i)] = m


def _insert(container, index, module):
    if not isinstance(module, Module):
        raise TypeError(f"insert: expected a Module, got {type(module).__name__}")
    mods = list(container._modules.values())
    mods.insert(operator.index(index), module)
    container._modules.clear()
    for i, m in enumerate(mods):
        container._modules[str(i)] = m


_FUSE = {}


def _functional():
    from . import functional

    return functional


def _fused_activation(m, nxt):
    """The ``activation`` of ``F.linear`` equal to ``nxt`` following ``m``, when ``m`` is a
    plain Linear (not a subclass: its forward may differ) and ``nxt`` a plain activation
    the linear op fuses; else None."""
    if not _FUSE:
        from .activation import GELU, ReLU, Sigmoid, Tanh
        from .linear import Linear

        _FUSE.update(linear=Linear, acts={ReLU: "relu", Tanh: "tanh", Sigmoid: "sigmoid", GELU: "gelu"})
    if type(m) is not _FUSE["linear"]:
        return None
    act = _FUSE["acts"].get(type(nxt))
    if act == "gelu" and getattr(nxt, "approximate", "none") != "none":
        return None
    return act


def _index_of(idx, n):
    try:
        idx = operator.index(idx)  # ints, NumPy ints; not floats
    except TypeError:
        raise TypeError(f"index must be an int or a slice, got {type(idx).__name__}") from None
    if not -n <= idx < n:
        raise IndexError(f"index {idx} is out of range for a container of {n} modules")
    return idx % n
