"""Autograd: a :class:`Tensor` wrapping a NumPy or CuPy array, recorded define-by-run.

A Tensor holds ``data`` (the array, never copied behind your back), ``grad``
(an array of the same shape and dtype, or None) and ``requires_grad``. Every
operation on Tensors that needs a gradient records a :class:`Node`: the
parents that need gradients and a closure that maps the output's gradient to
theirs. ``loss.backward()`` walks the graph once in reverse topological order,
accumulating into the leaves' ``.grad``; the graph is then freed (pass
``retain_graph=True`` to backward through it again).

Two kinds of operation record nodes:
- the registry's ops (``pydl.nn.functional.<name>``, made by :func:`op_function`):
  the forward calls ``OpSpec.call`` with the arguments the normalizer
  validated once, and the node's closure calls ``OpSpec.call_backward`` with
  those same arguments and the forward's ``saved`` (max-pool indices, batch-norm
  statistics, RNN activations, attention log-sum-exp): nothing is validated or
  recomputed twice. The backend is the one in effect at the forward (argument,
  ``use_backend`` or ``PYDL_BACKEND``), so a step run under ``use_backend`` runs
  its backward there too, even when ``backward()`` is called outside the block.
- Tensor arithmetic, reductions and shape operations (``+``, ``@``, ``sum``,
  ``reshape``, indexing, ``cat``, ...), computed with the array's own module
  (NumPy or CuPy); their gradients undo broadcasting and scatter back.

``no_grad()`` (and ``inference_mode()``) record nothing; ``Function`` is the
extension point for a user's own differentiable operation.
"""
from __future__ import annotations

import contextlib
import numbers
import threading
from collections import namedtuple

import numpy as np

from . import _array
from .registry import _CONTEXT, SPECS, _env_backend

__all__ = [
    "Tensor", "Function", "no_grad", "enable_grad", "inference_mode", "set_grad_enabled",
    "is_grad_enabled", "tensor", "as_tensor", "from_numpy", "zeros", "ones", "full", "empty",
    "zeros_like", "ones_like", "randn", "rand", "arange", "cat", "stack", "where", "manual_seed",
    "default_generator", "op_function",
]

# -- grad mode -------------------------------------------------------------------------

class _Mode(threading.local):
    enabled = True  # a class default: reading it never raises (getattr with a default costs 0.5 us)


_MODE = _Mode()


def is_grad_enabled() -> bool:
    """Whether operations record the graph in this thread (True unless inside ``no_grad``)."""
    return _MODE.enabled


class set_grad_enabled(contextlib.ContextDecorator):
    """Turn recording on or off in this thread, for a block or a decorated function."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)

    def __enter__(self):
        self.prev = is_grad_enabled()
        _MODE.enabled = self.mode

    def __exit__(self, *exc):
        _MODE.enabled = self.prev
        return False


class no_grad(set_grad_enabled):
    """Record nothing in this block (evaluation, parameter updates)."""

    def __init__(self):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    def __init__(self):
        super().__init__(True)


class inference_mode(set_grad_enabled):
    """As ``no_grad`` (pydl keeps no version counters, so the two cost the same)."""

    def __init__(self, mode: bool = True):
        super().__init__(not mode)


# -- random numbers --------------------------------------------------------------------

_GEN = [np.random.default_rng()]


def default_generator() -> np.random.Generator:
    """The generator behind ``pydl.randn``, ``nn.init`` and seedless dropout."""
    return _GEN[0]


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed :func:`default_generator` (init, dropout masks, ``randn``) for a repeatable run."""
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    _GEN[0] = np.random.default_rng(int(seed))
    return _GEN[0]


# -- the graph -------------------------------------------------------------------------


class Node:
    """One recorded operation: ``backward(grad_out)`` -> one gradient per parent.

    ``parents`` holds, per input, the Tensor that needs a gradient or None.
    A multi-output node (``n_out > 1``) gets a tuple of gradients, None for an
    output nothing depended on.
    """

    __slots__ = ("backward", "parents", "n_out", "name", "owned")

    def __init__(self, backward, parents, n_out=1, name="", owned=False):
        self.backward = backward
        self.parents = parents
        self.n_out = n_out
        self.name = name
        #: the backward returns arrays nobody else holds (a registry op's backward)
        self.owned = owned

    def __repr__(self):
        return f"<Node {self.name or self.backward.__name__}>"


def _wrap(data):
    if isinstance(data, np.generic):  # NumPy gives scalars for 0-d results; a Tensor holds an array
        data = np.asarray(data)
    t = Tensor.__new__(Tensor)
    t.data = data
    t.grad = None
    t.requires_grad = False
    t._node = None
    t._idx = 0
    return t


def _record(outs, parents, backward, name=""):
    """Wrap ``outs`` (an array or a tuple of arrays) into Tensors and, when a parent
    needs a gradient and grad mode is on, attach a node to them."""
    multi = isinstance(outs, tuple)
    node = None
    if _MODE.enabled:
        need = False
        for p in parents:
            if p is not None and p.requires_grad:
                need = True
                break
        if need:
            ps = []
            for p in parents:
                ps.append(p if (p is not None and p.requires_grad) else None)
            node = Node(backward, tuple(ps), len(outs) if multi else 1, name)
    return _outputs(outs, multi, node)


def _outputs(outs, multi: bool, node):
    """Tensors over ``outs`` (one array, or a tuple when ``multi``), each the output of
    ``node`` (None: outside the graph)."""
    if not multi:
        t = _wrap(outs)
        if node is not None:
            t.requires_grad = True
            t._node = node
        return t
    res = []
    for i, o in enumerate(outs):
        t = _wrap(o)
        if node is not None and o is not None:
            t.requires_grad = True
            t._node = node
            t._idx = i
        res.append(t)
    return tuple(res)


def _as_grad(g, t: "Tensor"):
    """The upstream gradient given to ``backward`` as an array like ``t.data``."""
    if isinstance(g, Tensor):
        g = g.data
    xp = _array.module(t.data)
    if _array.kind(g) is None:
        if not isinstance(g, numbers.Number):
            raise TypeError(f"backward: grad must be a Tensor, an array or a number, got {type(g).__name__}")
        g = xp.asarray(g, dtype=t.data.dtype)
    elif _array.kind(g) != _array.kind(t.data):
        raise TypeError(f"backward: grad is a {_array.kind(g)} array for a tensor on "
                        f"{t.device}; pass it on the tensor's device")
    if tuple(g.shape) != tuple(t.shape):
        if g.ndim == 0 or g.size == 1 and t.data.size == 1:
            g = g.reshape(t.shape)
        else:
            raise ValueError(f"backward: grad has shape {tuple(g.shape)}, expected the tensor's {tuple(t.shape)}")
    if g.dtype != t.data.dtype:
        if g.dtype.kind != "f":
            raise TypeError(f"backward: grad must be a float array, got dtype {g.dtype}")
        g = g.astype(t.data.dtype)
    return g


def _toposort(root: "Node"):
    """Nodes in an order where each comes after every node that consumes its output
    (a node is placed when all of its consumers reachable from ``root`` are)."""
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node.parents is None:
            raise RuntimeError(
                "backward through a graph whose buffers were freed by an earlier backward; "
                "pass retain_graph=True to the first backward to go through it twice"
            )
        for p in node.parents:
            if p is not None and p._node is not None and id(p._node) not in visited:
                stack.append((p._node, False))
    return order[::-1]  # root first


def _accumulate(t: "Tensor", g, owned: bool):
    """Add ``g`` into leaf ``t.grad``. The stored gradient belongs to ``t`` alone (in-place
    clipping or scaling of one gradient must not touch another's): a gradient ``owned``
    by this call (a fresh array from an op's backward) is kept as it is, any other copied."""
    if g.dtype != t.data.dtype:
        g, owned = g.astype(t.data.dtype), True
    if t.grad is None:
        if tuple(g.shape) != tuple(t.data.shape):
            g, owned = _array.module(g).broadcast_to(g, t.data.shape), False
        t.grad = g if owned else g.copy()
    else:
        t.grad += g


def _distinct(g, upstream, siblings) -> bool:
    n = 0
    for u in upstream:
        if u is g:
            return False
    for s in siblings:
        n += s is g
    return n == 1


def backward(t: "Tensor", grad=None, retain_graph: bool = False):
    if not t.requires_grad:
        raise RuntimeError("backward: the tensor does not require grad and has no graph "
                           "(did every input have requires_grad=False, or was it made under no_grad?)")
    if grad is None:
        if t.data.size != 1:
            raise RuntimeError(f"backward: grad can be implied only for a scalar output, "
                               f"got shape {tuple(t.shape)}; pass grad=")
        grad = _array.module(t.data).ones(t.shape, dtype=t.data.dtype)
    grad = _as_grad(grad, t)
    if t._node is None:  # a leaf
        _accumulate(t, grad, False)
        return
    order = _toposort(t._node)
    grads: dict[int, list] = {id(t._node): [None] * t._node.n_out}
    grads[id(t._node)][t._idx] = grad
    for node in order:
        gs = grads.pop(id(node), None)
        if gs is None or all(g is None for g in gs):
            if not retain_graph:
                node.parents = None
            continue
        in_grads = node.backward(gs[0] if node.n_out == 1 else tuple(gs))
        parents = node.parents
        if not retain_graph:
            node.parents = None
            node.backward = None
        for p, g in zip(parents, in_grads):
            if p is None or g is None:
                continue
            if p._node is None:
                # an op's backward returns new arrays; anything else may alias the upstream
                # gradient or another input's gradient
                _accumulate(p, g, node.owned and g.base is None and _distinct(g, gs, in_grads))
            else:
                slot = grads.setdefault(id(p._node), [None] * p._node.n_out)
                old = slot[p._idx]
                slot[p._idx] = g if old is None else old + g


# -- Tensor ----------------------------------------------------------------------------


def _arr(x):
    """The array behind a Tensor, or x itself."""
    return x.data if isinstance(x, Tensor) else x


def _unbroadcast(g, shape):
    """Sum ``g`` down to ``shape`` (the backward of broadcasting)."""
    if tuple(g.shape) == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


def _to_float_default(data, dtype):
    """``pydl.tensor`` of Python data: floats become float32 and ints int64, as torch does."""
    a = np.asarray(data, dtype=dtype)
    if dtype is None and a.dtype == np.float64 and not isinstance(data, np.ndarray):
        a = a.astype(np.float32)
    return a


MaxResult = namedtuple("MaxResult", ["values", "indices"])


class Tensor:
    """An array (NumPy or CuPy) with a gradient and its place in the graph."""

    __slots__ = ("data", "grad", "requires_grad", "_node", "_idx", "__weakref__")
    __array_priority__ = 1000  # ndarray <op> Tensor defers to Tensor's reflected operator

    def __init__(self, data, requires_grad: bool = False):
        if isinstance(data, Tensor):
            data = data.data
        elif isinstance(data, np.generic):
            data = np.asarray(data)
        if _array.kind(data) is None:
            raise TypeError(f"Tensor: expected a NumPy or CuPy array (use pydl.tensor() for Python "
                            f"data), got {type(data).__name__}")
        if requires_grad and data.dtype.kind not in "fc":
            raise TypeError(f"Tensor: only float tensors can require grad, got dtype {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None
        self._idx = 0

    # -- properties ------------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    is_leaf = property(lambda self: self._node is None)
    grad_fn = property(lambda self: self._node)
    T = property(lambda self: self.permute(*range(self.ndim - 1, -1, -1)))

    @property
    def device(self) -> str:
        return "cuda" if _array.kind(self.data) == "cupy" else "cpu"

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def dim(self) -> int:
        return self.data.ndim

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __repr__(self):
        g = ", requires_grad=True" if self.requires_grad else ""
        if self._node is not None:
            g = f", grad_fn={self._node!r}"
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{g})"

    # -- conversion ------------------------------------------------------------------
    def numpy(self):
        """The array on the host (the Tensor's own array for NumPy data: no copy)."""
        return self.data if isinstance(self.data, np.ndarray) else self.data.get()

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype, copy=False)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item: only a one-element tensor converts to a Python number, got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.item())

    def detach(self) -> "Tensor":
        """The same array, outside the graph."""
        return _wrap(self.data)

    def detach_(self) -> "Tensor":
        self._node = None
        self.requires_grad = False
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if self._node is not None and not requires_grad:
            raise RuntimeError("requires_grad_: only a leaf tensor can stop requiring grad; use detach()")
        if requires_grad and self.data.dtype.kind not in "fc":
            raise TypeError(f"requires_grad_: only float tensors can require grad, got dtype {self.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def clone(self) -> "Tensor":
        return _record(self.data.copy(), (self,), lambda g: (g,), "clone")

    def contiguous(self) -> "Tensor":
        xp = _array.module(self.data)
        return self if self.data.flags.c_contiguous else _record(xp.ascontiguousarray(self.data), (self,),
                                                                 lambda g: (g,), "contiguous")

    def to(self, device=None, dtype=None) -> "Tensor":
        """Move to ``"cpu"`` or ``"cuda"`` and/or cast to ``dtype`` (differentiable)."""
        if isinstance(device, (np.dtype, type)) and dtype is None:
            device, dtype = None, device
        t = self
        if device is not None:
            dev = str(device).split(":")[0]
            if dev not in ("cpu", "cuda"):
                raise ValueError(f"to: device must be 'cpu' or 'cuda', got {device!r}")
            if dev != self.device:
                if dev == "cuda":
                    import cupy
                    moved, back = cupy.asarray(self.data), (lambda g: (g.get(),))
                else:
                    moved, back = self.data.get(), (lambda g: (__import__("cupy").asarray(g),))
                t = _record(moved, (self,), back, "to")
        if dtype is not None and np.dtype(dtype) != t.dtype:
            src = t.dtype
            if np.dtype(dtype).kind == "f" and src.kind == "f":
                t = _record(t.data.astype(dtype), (t,), lambda g: (g.astype(src),), "cast")
            else:
                t = _wrap(t.data.astype(dtype))
        return t

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    def long(self):
        return self.to(dtype=np.int64)

    def type_as(self, other):
        return self.to(dtype=other.dtype)

    # -- autograd --------------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False):
        """Accumulate d(self)/d(leaf) * grad into every leaf's ``.grad`` that requires it.

        ``grad`` may be omitted for a one-element tensor (it is 1), or given as a
        Tensor, an array or a Python number."""
        backward(self, grad, retain_graph)

    # -- in-place (data only: refused on a leaf that records) ----------------------------
    def _inplace(self, what):
        if self.requires_grad and self._node is None and is_grad_enabled():
            raise RuntimeError(f"{what}: a leaf tensor that requires grad cannot be modified in place "
                               f"while recording; wrap the update in `with pydl.no_grad():`")
        if self._node is not None and is_grad_enabled():
            raise RuntimeError(f"{what}: in-place change of a tensor that is part of a graph is not supported")

    def zero_(self):
        self._inplace("zero_")
        self.data.fill(0)
        return self

    def fill_(self, value):
        self._inplace("fill_")
        self.data.fill(value)
        return self

    def copy_(self, src):
        self._inplace("copy_")
        src = _arr(src)
        if tuple(getattr(src, "shape", ())) != self.shape and np.broadcast_shapes(np.shape(src), self.shape) != self.shape:
            raise ValueError(f"copy_: source shape {np.shape(src)} does not broadcast to {self.shape}")
        self.data[...] = src
        return self

    def add_(self, other, alpha=1):
        self._inplace("add_")
        o = _arr(other)
        self.data += o if alpha == 1 else alpha * o
        return self

    def sub_(self, other, alpha=1):
        return self.add_(other, -alpha)

    def mul_(self, other):
        self._inplace("mul_")
        self.data *= _arr(other)
        return self

    def div_(self, other):
        self._inplace("div_")
        self.data /= _arr(other)
        return self

    def clamp_(self, min=None, max=None):
        self._inplace("clamp_")
        _array.module(self.data).clip(self.data, min, max, out=self.data)
        return self

    def uniform_(self, a=0.0, b=1.0, generator=None):
        self._inplace("uniform_")
        self.data[...] = _sample(self.data, (generator or default_generator()).uniform, a, b)
        return self

    def normal_(self, mean=0.0, std=1.0, generator=None):
        self._inplace("normal_")
        self.data[...] = _sample(self.data, (generator or default_generator()).normal, mean, std)
        return self

    def __setitem__(self, index, value):
        self._inplace("__setitem__")
        self.data[_index(index)] = _arr(value)

    # -- arithmetic --------------------------------------------------------------------
    def __add__(self, o):
        return add(self, o)

    def __radd__(self, o):
        return add(o, self)

    def __sub__(self, o):
        return sub(self, o)

    def __rsub__(self, o):
        return sub(o, self)

    def __mul__(self, o):
        return mul(self, o)

    def __rmul__(self, o):
        return mul(o, self)

    def __truediv__(self, o):
        return div(self, o)

    def __rtruediv__(self, o):
        return div(o, self)

    def __matmul__(self, o):
        return matmul(self, o)

    def __rmatmul__(self, o):
        return matmul(o, self)

    def __pow__(self, o):
        return pow(self, o)

    def __rpow__(self, o):
        return pow(o, self)

    def __neg__(self):
        return _record(-self.data, (self,), lambda g: (-g,), "neg")

    def __pos__(self):
        return self

    def __abs__(self):
        return self.abs()

    # comparisons: no gradient, bool tensors
    def _cmp(self, o, f):
        return _wrap(f(self.data, _arr(o)))

    __lt__ = lambda self, o: self._cmp(o, lambda a, b: a < b)  # noqa: E731
    __le__ = lambda self, o: self._cmp(o, lambda a, b: a <= b)  # noqa: E731
    __gt__ = lambda self, o: self._cmp(o, lambda a, b: a > b)  # noqa: E731
    __ge__ = lambda self, o: self._cmp(o, lambda a, b: a >= b)  # noqa: E731
    __eq__ = lambda self, o: self._cmp(o, lambda a, b: a == b)  # noqa: E731
    __ne__ = lambda self, o: self._cmp(o, lambda a, b: a != b)  # noqa: E731
    __hash__ = object.__hash__

    def __invert__(self):
        return _wrap(~self.data)

    def __and__(self, o):
        return _wrap(self.data & _arr(o))

    def __or__(self, o):
        return _wrap(self.data | _arr(o))

    # -- pointwise -----------------------------------------------------------------------
    def exp(self):
        y = _array.module(self.data).exp(self.data)
        return _record(y, (self,), lambda g: (g * y,), "exp")

    def log(self):
        x = self.data
        return _record(_array.module(x).log(x), (self,), lambda g: (g / x,), "log")

    def sqrt(self):
        y = _array.module(self.data).sqrt(self.data)
        return _record(y, (self,), lambda g: (g / (2 * y),), "sqrt")

    def abs(self):
        x = self.data
        xp = _array.module(x)
        return _record(xp.abs(x), (self,), lambda g: (g * xp.sign(x),), "abs")

    def clamp(self, min=None, max=None):
        x = self.data
        xp = _array.module(x)
        lo, hi = _arr(min), _arr(max)
        y = xp.clip(x, lo, hi)

        def bw(g):
            keep = xp.ones(x.shape, dtype=bool)
            if lo is not None:
                keep &= x >= lo
            if hi is not None:
                keep &= x <= hi
            return (xp.where(keep, g, 0).astype(g.dtype, copy=False),)

        return _record(y, (self,), bw, "clamp")

    clip = clamp

    def relu(self):
        from .nn import functional as F
        return F.relu(self)

    def sigmoid(self):
        from .nn import functional as F
        return F.sigmoid(self)

    def tanh(self):
        from .nn import functional as F
        return F.tanh(self)

    def softmax(self, dim):
        from .nn import functional as F
        return F.softmax(self, dim)

    def log_softmax(self, dim):
        from .nn import functional as F
        return F.log_softmax(self, dim)

    # -- reductions ----------------------------------------------------------------------
    def sum(self, dim=None, keepdim=False):
        x = self.data
        axes = _axes(dim, x.ndim)
        y = x.sum(axis=axes, keepdims=keepdim)
        xp = _array.module(x)

        def bw(g):
            if not keepdim and axes is not None:
                g = xp.expand_dims(g, axes)
            return (xp.broadcast_to(g, x.shape),)

        return _record(xp.asarray(y), (self,), bw, "sum")

    def mean(self, dim=None, keepdim=False):
        x = self.data
        axes = _axes(dim, x.ndim)
        n = x.size if axes is None else int(np.prod([x.shape[a] for a in axes]))
        xp = _array.module(x)
        y = xp.asarray(x.mean(axis=axes, keepdims=keepdim))

        def bw(g):
            if not keepdim and axes is not None:
                g = xp.expand_dims(g, axes)
            return (xp.broadcast_to(g / g.dtype.type(n), x.shape),)

        return _record(y, (self,), bw, "mean")

    def var(self, dim=None, keepdim=False, unbiased=True, correction=None):
        c = (1 if unbiased else 0) if correction is None else correction
        d = self - self.mean(dim, keepdim=True)
        n = self.data.size if dim is None else int(np.prod([self.shape[a] for a in _axes(dim, self.ndim)]))
        return (d * d).sum(dim, keepdim) / max(n - c, 0)

    def std(self, dim=None, keepdim=False, unbiased=True, correction=None):
        return self.var(dim, keepdim, unbiased, correction).sqrt()

    def max(self, dim=None, keepdim=False):
        """The maximum (dim None), or ``(values, indices)`` along ``dim``, as torch."""
        return _minmax(self, dim, keepdim, "max")

    def min(self, dim=None, keepdim=False):
        return _minmax(self, dim, keepdim, "min")

    def argmax(self, dim=None, keepdim=False):
        return _wrap(_argext(self.data, dim, keepdim, "argmax"))

    def argmin(self, dim=None, keepdim=False):
        return _wrap(_argext(self.data, dim, keepdim, "argmin"))

    # -- shape ---------------------------------------------------------------------------
    def reshape(self, *shape):
        shape = _shape_arg(shape)
        x = self.data
        return _record(x.reshape(shape), (self,), lambda g: (g.reshape(x.shape),), "reshape")

    def view(self, *shape):
        if not self.data.flags.c_contiguous:
            raise RuntimeError("view: the tensor is not contiguous; use reshape()")
        return self.reshape(*shape)

    def view_as(self, other):
        return self.view(other.shape)

    def expand(self, *shape):
        shape = tuple(s if s != -1 else self.shape[i - (len(shape) - self.ndim)]
                      for i, s in enumerate(_shape_arg(shape)))
        x = self.data
        xp = _array.module(x)
        return _record(xp.broadcast_to(x, shape), (self,), lambda g: (_unbroadcast(g, x.shape),), "expand")

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        s, e = _dim(start_dim, self.ndim, "flatten"), _dim(end_dim, self.ndim, "flatten")
        if s > e:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
        shape = self.shape[:s] + (int(np.prod(self.shape[s:e + 1])),) + self.shape[e + 1:]
        return self.reshape(shape)

    def unflatten(self, dim, sizes):
        d = _dim(dim, self.ndim, "unflatten")
        return self.reshape(self.shape[:d] + tuple(sizes) + self.shape[d + 1:])

    def squeeze(self, dim=None):
        if dim is None:
            shape = tuple(s for s in self.shape if s != 1)
        else:
            d = _dim(dim, max(self.ndim, 1), "squeeze")
            shape = self.shape if self.ndim == 0 or self.shape[d] != 1 else self.shape[:d] + self.shape[d + 1:]
        return self.reshape(shape)

    def unsqueeze(self, dim):
        d = _dim(dim, self.ndim + 1, "unsqueeze")
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def permute(self, *dims):
        dims = _shape_arg(dims)
        if sorted(d % max(self.ndim, 1) for d in dims) != list(range(self.ndim)):
            raise ValueError(f"permute: dims {dims} are not a permutation of {self.ndim} dimensions")
        dims = tuple(d % self.ndim for d in dims)
        inv = tuple(np.argsort(dims))
        return _record(self.data.transpose(dims), (self,), lambda g: (g.transpose(inv),), "permute")

    def transpose(self, dim0, dim1):
        dims = list(range(self.ndim))
        dim0, dim1 = _dim(dim0, self.ndim, "transpose"), _dim(dim1, self.ndim, "transpose")
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self.permute(*dims)

    def t(self):
        if self.ndim > 2:
            raise ValueError(f"t: expected at most 2 dimensions, got {self.ndim}")
        return self.permute(*range(self.ndim - 1, -1, -1))

    def flip(self, dims):
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        idx = [slice(None)] * self.ndim
        for d in dims:
            idx[d] = slice(None, None, -1)
        return self[tuple(idx)]

    def __getitem__(self, index):
        x = self.data
        index = _index(index)
        y = x[index]
        xp = _array.module(x)
        basic = _is_basic(index)

        def bw(g):
            full = xp.zeros(x.shape, dtype=g.dtype)
            if basic:
                full[index] = g
            elif xp is np:
                np.add.at(full, index, g)
            else:
                import cupyx
                cupyx.scatter_add(full, index, g)
            return (full,)

        return _record(y, (self,), bw, "index")

    def split(self, split_size_or_sections, dim=0):
        return split(self, split_size_or_sections, dim)

    def chunk(self, chunks, dim=0):
        return chunk(self, chunks, dim)

    # -- misc ------------------------------------------------------------------------------
    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


# -- helpers for Tensor methods ----------------------------------------------------------


def _sample(a, draw, p0, p1):
    x = draw(p0, p1, size=a.shape)
    if _array.kind(a) == "cupy":
        import cupy
        return cupy.asarray(x, dtype=a.dtype)
    return x.astype(a.dtype, copy=False)


def _dim(d, ndim: int, what: str) -> int:
    """``d`` in [-ndim, ndim) as a non-negative index (torch's IndexError otherwise)."""
    if not isinstance(d, numbers.Integral) or isinstance(d, bool):
        raise TypeError(f"{what}: dim must be an int, got {type(d).__name__}")
    if not -ndim <= d < ndim:
        raise IndexError(f"{what}: dimension out of range (expected to be in range of "
                         f"[{-ndim}, {ndim - 1}], but got {d})")
    return int(d) % ndim


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def _axes(dim, ndim):
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
    out = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"dim {d} out of range for a tensor of {ndim} dimensions")
        out.append(int(d) % max(ndim, 1))
    return tuple(out) if ndim else None


def _index(index):
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    if isinstance(index, list) and any(isinstance(i, Tensor) for i in index):
        return [i.data if isinstance(i, Tensor) else i for i in index]
    return index


def _is_basic(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (numbers.Integral, slice)) or i is None or i is Ellipsis for i in items)


def _argext(x, dim, keepdim, fn):
    xp = _array.module(x)
    if dim is None:
        return xp.asarray(getattr(xp, fn)(x))
    r = getattr(xp, fn)(x, axis=dim)
    return xp.expand_dims(r, dim) if keepdim else r


def _minmax(t: Tensor, dim, keepdim, kind):
    x = t.data
    xp = _array.module(x)
    if dim is None:
        flat = x.reshape(-1)
        if flat.size == 0:
            raise ValueError(f"{kind}: the tensor is empty")
        i = int((xp.argmax if kind == "max" else xp.argmin)(flat))

        def bw_all(g):
            full = xp.zeros(x.size, dtype=g.dtype)
            full[i] = g
            return (full.reshape(x.shape),)

        return _record(xp.asarray(flat[i]), (t,), bw_all, kind)
    d = dim % x.ndim
    idx = (xp.argmax if kind == "max" else xp.argmin)(x, axis=d)
    idx_k = xp.expand_dims(idx, d)
    vals = xp.take_along_axis(x, idx_k, axis=d)

    def bw(g):
        full = xp.zeros(x.shape, dtype=g.dtype)
        xp.put_along_axis(full, idx_k, g if keepdim else xp.expand_dims(g, d), axis=d)
        return (full,)

    v = _record(vals if keepdim else vals.squeeze(d), (t,), bw, kind)
    return MaxResult(v, _wrap(idx_k if keepdim else idx))


# -- binary operations with broadcasting --------------------------------------------------


def _binary_operands(a, b):
    ta, tb = isinstance(a, Tensor), isinstance(b, Tensor)
    xa = a.data if ta else a
    xb = b.data if tb else b
    return (a if ta else None), (b if tb else None), xa, xb


def add(a, b):
    pa, pb, xa, xb = _binary_operands(a, b)
    y = xa + xb
    sa, sb = np.shape(xa), np.shape(xb)
    return _record(y, (pa, pb), lambda g: (_unbroadcast(g, sa), _unbroadcast(g, sb)), "add")


def sub(a, b):
    pa, pb, xa, xb = _binary_operands(a, b)
    y = xa - xb
    sa, sb = np.shape(xa), np.shape(xb)
    return _record(y, (pa, pb), lambda g: (_unbroadcast(g, sa), _unbroadcast(-g, sb)), "sub")


def mul(a, b):
    pa, pb, xa, xb = _binary_operands(a, b)
    y = xa * xb
    sa, sb = np.shape(xa), np.shape(xb)
    return _record(y, (pa, pb), lambda g: (None if pa is None else _unbroadcast(g * xb, sa),
                                           None if pb is None else _unbroadcast(g * xa, sb)), "mul")


def div(a, b):
    pa, pb, xa, xb = _binary_operands(a, b)
    y = xa / xb
    sa, sb = np.shape(xa), np.shape(xb)
    return _record(y, (pa, pb), lambda g: (None if pa is None else _unbroadcast(g / xb, sa),
                                           None if pb is None else _unbroadcast(-g * y / xb, sb)), "div")


def pow(a, b):
    pa, pb, xa, xb = _binary_operands(a, b)
    y = xa ** xb
    sa, sb = np.shape(xa), np.shape(xb)

    def bw(g):
        ga = gb = None
        if pa is not None:
            ga = _unbroadcast(g * xb * xa ** (xb - 1), sa)
        if pb is not None:
            xp = _array.module(y)
            with np.errstate(divide="ignore", invalid="ignore"):
                lg = xp.where(xa > 0, xp.log(xp.where(xa > 0, xa, 1)), 0)
            gb = _unbroadcast(g * y * lg, sb)
        return ga, gb

    return _record(y, (pa, pb), bw, "pow")


def matmul(a, b):
    """``a @ b``: 2-D and 3-D operands through pydl's matmul op (the GEMM kernels);
    other ranks through the array module's matmul."""
    pa, pb, xa, xb = _binary_operands(a, b)
    if _array.kind(xa) is None or _array.kind(xb) is None:
        raise TypeError(f"matmul: operands must be Tensors or arrays, got {type(a).__name__} and {type(b).__name__}")
    if xa.ndim in (2, 3) and xb.ndim in (2, 3) and not (xa.ndim == 3 and xb.ndim == 3 and xa.shape[0] != xb.shape[0]):
        return _MATMUL(a, b)
    xp = _array.module(xa)
    y = xp.matmul(xa, xb)
    # a 1-D operand is a row (left) or a column (right) matrix, as in NumPy's matmul
    a2 = xa[None, :] if xa.ndim == 1 else xa
    b2 = xb[:, None] if xb.ndim == 1 else xb
    y2 = xp.matmul(a2, b2).shape if (xa.ndim == 1 or xb.ndim == 1) else y.shape

    def bw(g):
        g = g.reshape(y2)
        ga = gb = None
        if pa is not None:
            ga = _unbroadcast(xp.matmul(g, xp.swapaxes(b2, -1, -2)), a2.shape).reshape(xa.shape)
        if pb is not None:
            gb = _unbroadcast(xp.matmul(xp.swapaxes(a2, -1, -2), g), b2.shape).reshape(xb.shape)
        return ga, gb

    return _record(y, (pa, pb), bw, "matmul")


def where(cond, a, b):
    """``a`` where ``cond`` else ``b`` (differentiable in ``a`` and ``b``)."""
    c = _arr(cond)
    pa, pb, xa, xb = _binary_operands(a, b)
    xp = _array.module(c if _array.kind(c) else (xa if _array.kind(xa) else xb))
    y = xp.where(c, xa, xb)
    sa, sb = np.shape(xa), np.shape(xb)

    def bw(g):
        z = xp.zeros((), dtype=g.dtype)
        return (None if pa is None else _unbroadcast(xp.where(c, g, z), sa),
                None if pb is None else _unbroadcast(xp.where(c, z, g), sb))

    return _record(y, (pa, pb), bw, "where")


def _sequence(tensors, what):
    """(tensors as a list, their arrays, the array module) of a non-empty sequence."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{what}: expected a non-empty sequence of tensors")
    xs = [_arr(t) for t in tensors]
    return tensors, xs, _array.module(xs[0])


def cat(tensors, dim=0):
    tensors, xs, xp = _sequence(tensors, "cat")
    d = dim % xs[0].ndim
    y = xp.concatenate(xs, axis=d)
    bounds = np.cumsum([x.shape[d] for x in xs])[:-1]

    def bw(g):
        return tuple(xp.split(g, bounds, axis=d))

    return _record(y, tuple(t if isinstance(t, Tensor) else None for t in tensors), bw, "cat")


def stack(tensors, dim=0):
    tensors, xs, xp = _sequence(tensors, "stack")
    y = xp.stack(xs, axis=dim)
    d = dim % y.ndim

    def bw(g):
        return tuple(xp.take(g, i, axis=d) for i in range(len(xs)))

    return _record(y, tuple(t if isinstance(t, Tensor) else None for t in tensors), bw, "stack")


def split(t: Tensor, split_size_or_sections, dim=0):
    n = t.shape[dim]
    if isinstance(split_size_or_sections, numbers.Integral):
        s = int(split_size_or_sections)
        if s <= 0:
            raise ValueError(f"split: split_size must be positive, got {s}")
        sizes = [min(s, n - i) for i in range(0, n, s)] or [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if sum(sizes) != n:
            raise ValueError(f"split: sections {sizes} do not sum to dim {dim}'s size {n}")
    out, start = [], 0
    idx = [slice(None)] * t.ndim
    for s in sizes:
        idx[dim] = slice(start, start + s)
        out.append(t[tuple(idx)])
        start += s
    return tuple(out)


def chunk(t: Tensor, chunks: int, dim=0):
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be positive, got {chunks}")
    n = t.shape[dim]
    return split(t, max(1, -(-n // chunks)), dim)


# -- factories -----------------------------------------------------------------------------


def tensor(data, dtype=None, requires_grad=False, device="cpu") -> Tensor:
    """A new Tensor from Python data or an array (copied); Python floats give float32."""
    a = _arr(data)
    if _array.kind(a) == "cupy":
        a = a.astype(dtype or a.dtype, copy=True)
    else:
        a = _to_float_default(a, dtype).copy()
    t = Tensor(a, requires_grad=requires_grad)
    return t.to(device) if device != "cpu" else t


def as_tensor(data, dtype=None) -> Tensor:
    """A Tensor over ``data`` without a copy when it is already an array of ``dtype``."""
    if isinstance(data, Tensor):
        return data if dtype is None else data.to(dtype=dtype)
    if _array.kind(data) is not None:
        return Tensor(data if dtype is None else data.astype(dtype, copy=False))
    return Tensor(_to_float_default(data, dtype))


def from_numpy(a: np.ndarray) -> Tensor:
    return Tensor(a)


def _factory(fn):
    def make(*shape, dtype=np.float32, requires_grad=False):
        return Tensor(fn(_shape_arg(shape), dtype), requires_grad=requires_grad)
    return make


zeros = _factory(lambda s, dt: np.zeros(s, dt))
ones = _factory(lambda s, dt: np.ones(s, dt))
empty = _factory(lambda s, dt: np.empty(s, dt))


def full(shape, fill_value, dtype=np.float32, requires_grad=False):
    return Tensor(np.full(_shape_arg((shape,)), fill_value, dtype), requires_grad=requires_grad)


def randn(*shape, dtype=np.float32, requires_grad=False, generator=None):
    g = generator or default_generator()
    return Tensor(g.standard_normal(_shape_arg(shape)).astype(dtype), requires_grad=requires_grad)


def rand(*shape, dtype=np.float32, requires_grad=False, generator=None):
    g = generator or default_generator()
    return Tensor(g.random(_shape_arg(shape)).astype(dtype), requires_grad=requires_grad)


def arange(*args, dtype=None):
    return Tensor(np.arange(*args, dtype=dtype))


def zeros_like(t, dtype=None, requires_grad=False):
    x = _arr(t)
    return Tensor(_array.module(x).zeros(x.shape, dtype=dtype or x.dtype), requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    x = _arr(t)
    return Tensor(_array.module(x).ones(x.shape, dtype=dtype or x.dtype), requires_grad=requires_grad)


# -- Function: a user's own differentiable operation ----------------------------------------


class _Ctx:
    """What ``Function.forward`` keeps for ``Function.backward``."""

    def save_for_backward(self, *arrays):
        self.saved_tensors = arrays


class Function:
    """A differentiable operation written by hand on arrays::

        class Square(Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x * x
            @staticmethod
            def backward(ctx, g):
                (x,) = ctx.saved_tensors
                return 2 * x * g

        y = Square.apply(t)

    ``forward`` receives arrays (Tensors unwrapped) and returns an array or a
    tuple of arrays; ``backward`` receives one gradient per output (None for an
    output nothing used) and returns one gradient (or None) per input.
    """

    @staticmethod
    def forward(ctx, *args):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args):
        ctx = _Ctx()
        out = cls.forward(ctx, *(_arr(a) for a in args))
        parents = tuple(a if isinstance(a, Tensor) else None for a in args)

        def bw(g):
            res = cls.backward(ctx, *(g if isinstance(out, tuple) else (g,)))
            return res if isinstance(res, tuple) else (res,)

        return _record(out, parents, bw, cls.__name__)


# -- registry ops on Tensors -----------------------------------------------------------------


def op_function(name: str):
    """``pydl.ops.<name>`` on Tensors, recorded for autograd.

    Tensor arguments are unwrapped; the spec's normalizer validates everything
    once; the forward runs through ``OpSpec.call`` on the backend in effect and
    the node's backward through ``OpSpec.call_backward`` with the same
    normalized arguments and the forward's ``saved``. Only differentiable
    inputs that are Tensors requiring grad become parents; the others' gradients
    are not wanted (``needs``), which a backend may use to skip them.
    """
    spec = SPECS[name]
    params = tuple(spec.signature.parameters)
    nparams = len(params)
    diff = spec.differentiable

    def f(*args, backend=None, **kwargs):
        # the hot path of every layer: plain loops, no generators (each costs ~0.5 us)
        vals, kw, tens = args, kwargs, None
        for i, v in enumerate(args):
            if isinstance(v, Tensor):
                if tens is None:
                    tens = {}
                if vals is args:
                    vals = list(args)
                if i < nparams:
                    tens[params[i]] = v
                vals[i] = v.data
        for k, v in kwargs.items():
            if isinstance(v, Tensor):
                if tens is None:
                    tens = {}
                if kw is kwargs:
                    kw = dict(kwargs)
                tens[k] = v
                kw[k] = v.data
        a = spec.bind(vals, kw)
        bk = backend or _CONTEXT.get() or _env_backend() or None
        out, saved = spec.call(a, bk)
        node = None
        if tens is not None and _MODE.enabled:
            parents, needs, any_need = [], [], False
            for d in diff:
                p = tens.get(d)
                if p is not None and p.requires_grad:
                    any_need = True
                    parents.append(p)
                    needs.append(True)
                else:
                    parents.append(None)
                    needs.append(False)
            if any_need:
                needs = tuple(needs)

                def bw(g):
                    # autograd's gradients have the outputs' shapes by construction; a consumer
                    # of another dtype (x32 * f64 array) may hand back its own: cast as torch does
                    if spec.outputs == 1:
                        if g.dtype != out.dtype:
                            g = g.astype(out.dtype)
                    else:
                        g = tuple(gi if gi is None or gi.dtype == o.dtype else gi.astype(o.dtype)
                                  for gi, o in zip(g, out))
                    return spec.call_backward(g, a, saved, bk, needs=needs, checked=False)

                node = Node(bw, tuple(parents), spec.outputs, name, True)
        return _outputs(out, spec.outputs > 1, node)

    f.__name__ = f.__qualname__ = name
    f.__doc__ = (spec.normalize.__doc__ or "") + (
        f"\n\nOn Tensors, recorded for autograd; gradients for {', '.join(diff)}.")
    f.spec = spec
    return f




class _LazyMatmul:
    """The matmul op on Tensors, built on first use (the op table is complete by then)."""

    def __call__(self, a, b):
        global _MATMUL
        _MATMUL = op_function("matmul")
        return _MATMUL(a, b)


_MATMUL = _LazyMatmul()
