"""The op registry: one :class:`OpSpec` per op, implementations per backend,
and dispatch.

An op is declared once, in ``pydl/ops/<family>.py``, with :func:`defop`. The
decorated function is the op's *normalizer*: it has the public signature,
validates every argument (naming it in the error) and returns the arguments
in canonical form as a dict. :func:`defop` turns it into the public op
``pydl.ops.<name>`` and adds ``pydl.ops.<name>_backward``.

A backend implements an op with one line::

    @register("relu", "cpp")
    def relu(x): ...

    @register("relu_backward", "cpp")
    def relu_backward(grad, x, saved=None): ...

Implementations receive the normalized arguments by keyword. A forward
returns the output (a tuple for multi-output ops), or ``(output, saved)`` when
the spec lists ``saves``. A backward receives the upstream gradient first
(for multi-output ops a tuple whose entries may be None), the forward's
arguments, and ``saved`` (the forward's dict, or None: then it recomputes
what it needs). It returns a tuple with one gradient per name in
``differentiable`` (None for an input that was None).

A backend may register named *variants* of an op beside its default (the
steps of a kernel's development, or alternative algorithms)::

    @register("matmul", "cpp", variant="naive")
    def matmul_naive(a, b): ...

and any place that names a backend accepts ``"backend:variant"``
(``backend="cpp:naive"``, ``use_backend("cpp:naive")``, ``PYDL_BACKEND``).
:func:`variants` lists them; ``pydl check`` and ``pydl bench`` time them
side by side. A variant without a ``_backward`` variant has no backward.

Backend selection, first match wins: ``backend=`` argument, the
:func:`use_backend` context, the ``PYDL_BACKEND`` variable, then automatic:
CuPy arrays go to ``cuda``, NumPy arrays to the first CPU backend in
:data:`CPU_ORDER` that implements the op. A backend named in any of the
first three ways that lacks the op raises ``NotImplementedError``; nothing
falls back silently and nothing is copied between host and device.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import _array

#: CPU backends, fastest first: the automatic choice for NumPy arrays.
CPU_ORDER = ("cpp", "cython", "numba", "numpy")
#: Every backend name pydl knows.
BACKENDS = CPU_ORDER + ("cuda",)

#: op name -> OpSpec
SPECS: dict[str, "OpSpec"] = {}
#: registry key ("relu" or "relu_backward") -> {backend: implementation}
IMPLS: dict[str, dict[str, Callable]] = {}
#: registry key -> {backend: {variant name: implementation}} (named variants only)
VARIANTS: dict[str, dict[str, dict[str, Callable]]] = {}

_CONTEXT = contextvars.ContextVar("pydl_backend", default=None)


@dataclass
class Case:
    """One set of keyword arguments for an op, with a readable id."""

    id: str
    args: dict
    #: labels; benchmark cases tagged "quick" are the ones ``pydl bench --quick`` runs
    tags: tuple = ()


@dataclass
class BadCase:
    """Arguments an op must reject with ``exc`` whose message matches ``match``."""

    id: str
    args: dict
    exc: type
    match: str


class Viewed(dict):
    """Normalized arguments whose public result is a view of the kernels' one.

    A normalizer returns this instead of a plain dict when the caller's form differs
    from the canonical one the kernels take: an unbatched input given a batch
    dimension (a view), an operand broadcast, ``return_indices``. ``out(out, saved)``
    turns the kernels' output into the public one; ``grad(g)`` the public upstream
    gradient into the kernels' form; ``grads(res)`` the kernels' input gradients into
    the shapes and dtypes of the arguments the caller gave. Each may be None (identity).
    Plain dicts, the common case, pay one type check.
    """

    __slots__ = ("out", "grad", "grads")

    def __init__(self, args: dict, out=None, grad=None, grads=None):
        super().__init__(args)
        self.out, self.grad, self.grads = out, grad, grads


#: backends whose kernels run on pydl's own CPU threads (and their variants' tags, "cpp:name"):
#: before them OpenBLAS's spinning workers may be parked (pydl/backends/_neighbours.py)
_NATIVE_CPU = ("cpp", "cython", "numba")


_NEIGHBOURS = []  # pydl.backends._neighbours.before_native, imported on the first native call


def _before_native(spec, tag: str, a):
    """None, or the function to call after the kernel (it restores pydl's thread count)."""
    if not _NEIGHBOURS:  # (an import statement per call cost ~1 us)
        from .backends._neighbours import before_native

        _NEIGHBOURS.append(before_native)
    return _NEIGHBOURS[0](spec, tag, a)


def _run(impl, after, /, *args, **kwargs):
    """impl(*args, **kwargs), then ``after()`` if there is one (even when impl raises)."""
    if after is None:
        return impl(*args, **kwargs)
    try:
        return impl(*args, **kwargs)
    finally:
        after()


def _default_bytes(spec: "OpSpec", a: dict) -> int:
    """Fewest bytes a forward moves: every array input read once, output written once."""
    n = sum(v.nbytes for v in a.values() if _array.kind(v) is not None)
    shapes = spec.out_shape(a)
    shapes = shapes if spec.outputs > 1 else (shapes,)
    item = spec.dtype_of(a).itemsize
    return int(n + sum(int(np.prod(s)) * item for s in shapes))


@dataclass(eq=False)
class OpSpec:
    """Everything pydl knows about one op, independent of any backend."""

    name: str
    family: str
    normalize: Callable[..., dict]
    differentiable: tuple[str, ...]
    out_shape: Callable[[dict], Any]
    flops: Callable[[dict], float]
    tol: dict[str, tuple[float, float]]
    cases: Callable[[np.random.Generator, np.dtype], list[Case]]
    bad_cases: Callable[[np.random.Generator], list[BadCase]] | None = None
    torch: Callable | None = None
    saves: tuple[str, ...] = ()
    outputs: int = 1
    bytes: Callable[[dict], float] | None = None
    grad_tol: dict[str, tuple[float, float]] | None = None
    dtypes: tuple[str, ...] = ("float32", "float64")
    #: finite differences skip these inputs (e.g. a variance clamped at eps)
    fd_skip: tuple[str, ...] = ()
    #: ``bench(rng, dtype)`` -> benchmark cases (realistic sizes); see :func:`defop`
    bench: Callable | None = None
    #: ``tol_scale(a)`` -> factor >= 1 on ``tol``/``grad_tol`` for long accumulations (see :meth:`tolerance`)
    tol_scale: Callable | None = None
    #: arguments the op updates in place by its contract (batch_norm's running statistics)
    mutates: tuple[str, ...] = ()
    signature: inspect.Signature = field(init=False)
    forward: Callable = field(init=False)
    backward: Callable = field(init=False)
    with_saved: Callable = field(init=False)

    def __post_init__(self):
        self.signature = inspect.signature(self.normalize)

    # -- argument handling ---------------------------------------------------
    def bind(self, args, kwargs) -> dict:
        """Bind public arguments and run the normalizer (all validation).

        The normalizer has the public signature, so Python binds the
        arguments itself (no ``inspect`` on the hot path); any TypeError,
        ValueError or MemoryError (an output no machine holds), from binding or
        from validation, gets the op's name.
        """
        try:
            return self.normalize(*args, **kwargs)
        except (TypeError, ValueError, MemoryError) as e:
            e.args = (f"pydl.ops.{self.name}: {e.args[0] if e.args else e}",) + e.args[1:]
            raise  # one-device check: in select(), with the upstream gradient too

    def dtype_of(self, a: dict) -> np.dtype:
        for v in a.values():
            if _array.kind(v) is not None and v.dtype.kind == "f":
                return v.dtype
        return np.dtype(np.float64)

    def nbytes(self, a: dict) -> int:
        return int(self.bytes(a)) if self.bytes else _default_bytes(self, a)

    def grad_tolerance(self, dtype) -> tuple[float, float]:
        return (self.grad_tol or self.tol)[np.dtype(dtype).name]

    def tolerance(self, dtype, a: dict | None = None, grad: bool = False) -> tuple[float, float]:
        """``(rtol, atol)`` for arguments ``a``: the spec's tolerance (chosen for the
        small conformance cases) times ``tol_scale(a)``, which grows with the longest
        accumulation at benchmark sizes (a float32 sum of K terms has a worst-case
        error proportional to K)."""
        rtol, atol = self.grad_tolerance(dtype) if grad else self.tol[np.dtype(dtype).name]
        f = max(1.0, float(self.tol_scale(a))) if (self.tol_scale and a is not None) else 1.0
        return rtol * f, atol * f

    def implementations(self, backward: bool = False) -> dict[str, Callable]:
        from . import backends

        backends.load()
        return IMPLS.get(self.name + ("_backward" if backward else ""), {})

    # -- calling ---------------------------------------------------------------
    def call(self, a: dict, backend: str | None = None):
        """Forward on normalized arguments; returns (output, saved)."""
        b, impl = select(self.name, a, backend)
        after = _before_native(self, b, a) if b.startswith(_NATIVE_CPU) else None
        res = _run(impl, after, **a)
        out, saved = res if self.saves else (res, None)
        if type(a) is not dict and a.out is not None:
            out = a.out(out, saved)
        return _arrays(out), saved

    def call_backward(self, grad, a: dict, saved=None, backend: str | None = None, needs=None,
                      checked: bool = True):
        """Gradients of the differentiable inputs. ``needs`` (optional, one bool per name in
        ``differentiable``) tells an implementation that declares a ``needs`` keyword which
        gradients nobody wants (e.g. conv2d's input gradient for a network's input); it may
        return None for those. Implementations without the keyword compute them all.
        ``checked=False`` skips the upstream gradient's checks: for autograd, whose gradients
        have the output's shape, dtype and device by construction."""
        viewed = type(a) is not dict
        if viewed and a.grad is not None:
            grad = a.grad(grad)
        if checked:
            grad = _check_grad(self, grad, a)
            b, impl = select(self.name + "_backward", a, backend, extra=grad)
        else:
            b, impl = select(self.name + "_backward", a, backend)
        after = _before_native(self, b, a) if b.startswith(_NATIVE_CPU) else None
        if needs is not None and getattr(impl, "_pydl_takes_needs", False):
            res = _arrays(_run(impl, after, grad, saved=saved, needs=tuple(needs), **a))
        else:
            res = _arrays(_run(impl, after, grad, saved=saved, **a))
        if not isinstance(res, tuple) or len(res) != len(self.differentiable):
            raise RuntimeError(
                f"{self.name}_backward implementation returned {type(res).__name__} "
                f"of length {len(res) if isinstance(res, tuple) else '-'}; "
                f"expected a tuple of {len(self.differentiable)} gradients "
                f"for {self.differentiable}"
            )
        if viewed and a.grads is not None:
            res = a.grads(res)
        return res


def _arrays(out):
    """NumPy turns 0-d results into scalars; ops always return arrays."""
    if type(out) is np.ndarray:
        return out
    if isinstance(out, np.generic):
        return np.asarray(out)
    if isinstance(out, tuple):
        return tuple(_arrays(o) for o in out)
    return out


def defop(
    *,
    family: str,
    differentiable: tuple[str, ...],
    out_shape: Callable[[dict], Any],
    flops: Callable[[dict], float],
    tol: dict[str, tuple[float, float]],
    cases: Callable,
    bad_cases: Callable | None = None,
    torch: Callable | None = None,
    saves: tuple[str, ...] = (),
    outputs: int = 1,
    bytes: Callable | None = None,
    grad_tol: dict | None = None,
    dtypes: tuple[str, ...] = ("float32", "float64"),
    fd_skip: tuple[str, ...] = (),
    bench: Callable | None = None,
    tol_scale: Callable | None = None,
    mutates: tuple[str, ...] = (),
):
    """Declare an op. Decorates its normalizer; returns the public forward.

    ``torch(torch_module, F, a)`` computes the same op with PyTorch on the
    normalized arguments ``a`` (arrays turned into float64 tensors), for the
    oracle tests. ``out_shape(a)`` returns the output shape (a tuple of
    shapes when ``outputs > 1``); ``flops(a)`` the forward flop count.
    ``cases(rng, dtype)`` gives the small conformance cases;
    ``bench(rng, dtype, quick=False)`` the benchmark cases (realistic sizes,
    each :class:`Case` tagged "quick" if ``pydl bench --quick`` should run
    it; a generator that accepts ``quick`` builds only those when it is True,
    so a quick run does not allocate the large cases).
    """

    def deco(normalize):
        name = normalize.__name__
        if name in SPECS:
            raise ValueError(f"op {name!r} is declared twice")
        spec = OpSpec(
            name=name, family=family, normalize=normalize,
            differentiable=tuple(differentiable), out_shape=out_shape,
            flops=flops, tol=tol, cases=cases, bad_cases=bad_cases,
            torch=torch, saves=tuple(saves), outputs=outputs, bytes=bytes,
            grad_tol=grad_tol, dtypes=tuple(dtypes), fd_skip=tuple(fd_skip),
            bench=bench, tol_scale=tol_scale, mutates=tuple(mutates),
        )

        @functools.wraps(normalize)
        def forward(*args, backend: str | None = None, **kwargs):
            return spec.call(spec.bind(args, kwargs), backend)[0]

        def with_saved(*args, backend: str | None = None, **kwargs):
            """Forward returning ``(output, saved)`` for a later backward."""
            return spec.call(spec.bind(args, kwargs), backend)

        def backward(grad, *args, saved=None, backend: str | None = None, **kwargs):
            return spec.call_backward(grad, spec.bind(args, kwargs), saved, backend)

        params = list(spec.signature.parameters.values())
        kw_backend = inspect.Parameter("backend", inspect.Parameter.KEYWORD_ONLY, default=None)
        forward.__signature__ = spec.signature.replace(parameters=params + [kw_backend])
        backward.__name__ = backward.__qualname__ = name + "_backward"
        backward.__module__ = normalize.__module__
        backward.__signature__ = spec.signature.replace(
            parameters=[inspect.Parameter("grad", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
            + params
            + [inspect.Parameter("saved", inspect.Parameter.KEYWORD_ONLY, default=None), kw_backend]
        )
        backward.__doc__ = (
            f"Gradients of ``{name}`` with respect to {', '.join(differentiable)} "
            f"(a tuple, None for an input that was None), given the upstream "
            f"gradient ``grad`` and the forward's arguments. ``saved`` is what "
            f"``{name}.with_saved`` returned; without it the backward recomputes."
        )
        forward.with_saved = with_saved
        forward.spec = backward.spec = spec
        spec.forward, spec.backward, spec.with_saved = forward, backward, with_saved
        SPECS[name] = spec
        setattr(sys.modules[normalize.__module__], name + "_backward", backward)
        return forward

    return deco


def register(op: str, backend: str, variant: str | None = None):
    """Register ``fn`` as ``backend``'s implementation of ``op`` (or ``op_backward``).

    With ``variant``, register a named alternative instead of the default;
    it is reached as ``backend="<backend>:<variant>"``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    base = op[: -len("_backward")] if op.endswith("_backward") else op
    if base not in SPECS:
        raise KeyError(f"register({op!r}, {backend!r}): no op named {base!r} is declared")

    if variant is not None and (not isinstance(variant, str) or not variant or ":" in variant):
        raise ValueError(f"register({op!r}, {backend!r}): variant must be a non-empty str "
                         f"without ':', got {variant!r}")

    def deco(fn):
        _VERSION[0] += 1
        if op.endswith("_backward"):
            try:
                fn._pydl_takes_needs = "needs" in inspect.signature(fn).parameters
            except (TypeError, ValueError):  # a builtin without a signature
                pass
        if variant is None:
            IMPLS.setdefault(op, {})[backend] = fn
        else:
            VARIANTS.setdefault(op, {}).setdefault(backend, {})[variant] = fn
        return fn

    return deco


def variants(op: str, backend: str) -> list[str]:
    """Names of the variants ``backend`` registered for ``op`` (without the default)."""
    from . import backends

    backends.load(backend)
    return sorted(VARIANTS.get(op, {}).get(backend, {}))


@functools.lru_cache(maxsize=256)
def split_backend(name: str) -> tuple[str, str | None]:
    """``"cpp:naive"`` -> ``("cpp", "naive")``; ``"cpp"`` -> ``("cpp", None)``."""
    base, _, variant = name.partition(":")
    if base not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)} "
                         f"(optionally 'backend:variant')")
    return base, (variant or None)


@functools.lru_cache(maxsize=256)
def backend_order(name: str) -> tuple[str, ...]:
    """``"cpp,numpy"`` -> ``("cpp", "numpy")``: a preference order (each entry checked)."""
    parts = tuple(p.strip() for p in name.split(","))
    if not all(parts):
        raise ValueError(f"empty backend name in {name!r}")
    for p in parts:
        split_backend(p)
    return parts


@contextlib.contextmanager
def use_backend(name):
    """Run every op in this block on backend ``name`` (None: automatic).

    ``name`` may also be a preference order, ``"cpp,numpy"`` or ``["cpp", "numpy"]``:
    each op runs on the first backend in the order that implements it for the
    arrays given (a whole model under ``use_backend("cpp,numpy")`` takes the C++
    kernels where they exist and the reference elsewhere). A single name never
    falls back: an op it lacks raises ``NotImplementedError``.
    """
    if name is not None:
        if isinstance(name, (list, tuple)) and name and all(isinstance(n, str) for n in name):
            name = ",".join(name)
        if not isinstance(name, str):
            raise TypeError(f"use_backend: expected a backend name (str), a preference order "
                            f"(a list of names or 'a,b,...') or None, got {type(name).__name__}")
        try:
            backend_order(name)
        except ValueError as e:
            raise ValueError(f"use_backend: {e}") from None
    token = _CONTEXT.set(name)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def _kinds(values) -> set:
    out = set()
    for v in values:
        if isinstance(v, (tuple, list)):
            out |= _kinds(v)
        else:
            k = _array.kind(v)
            if k is not None:
                out.add(k)
    return out


def _check_one_kind(opname: str, a: dict, extra=None):
    # fast path: every array a NumPy array (the common case on the CPU)
    kinds = None
    for v in a.values():
        if type(v) is np.ndarray or v is None or type(v) in _SCALARS:
            continue
        kinds = _kinds(list(a.values()))
        break
    if extra is not None:
        kinds = (kinds or {"numpy"}) | _kinds([extra])
    if kinds is None:
        return "numpy"
    if len(kinds) > 1:
        raise TypeError(
            f"pydl.ops.{opname}: got both NumPy and CuPy arrays; pass all arrays on "
            f"one device (pydl never copies between host and device)"
        )
    return kinds.pop() if kinds else "numpy"


_SCALARS = (int, float, bool, str, tuple)


def _env_backend() -> str | None:
    """PYDL_BACKEND as it is now. ``os.environ.get`` costs 0.3-1.5 us (it encodes the
    key and goes through the Mapping machinery), a third of a small op's dispatch; the
    dict behind os.environ (``_data``, what assignment and monkeypatch.setenv update)
    is read directly, unless os.environ was replaced by some other mapping."""
    env = os.environ
    if type(env) is not os._Environ:
        return env.get("PYDL_BACKEND")
    v = env._data.get(_ENV_KEY)
    return None if v is None else env.decodevalue(v)


_ENV_KEY = os.environ.encodekey("PYDL_BACKEND")


def requested_backend(explicit: str | None = None) -> str | None:
    """The backend named by argument, context or PYDL_BACKEND (None: automatic)."""
    name = explicit or _CONTEXT.get() or _env_backend() or None
    if name is not None:
        backend_order(name)
    return name


def select(key: str, a: dict, explicit: str | None = None, extra=None):
    """Choose (backend name, implementation) for registry key ``key``."""
    arr_kind = _check_one_kind(key, a, extra)
    name = explicit or _CONTEXT.get() or _env_backend() or None
    if name is not None:
        hit = _NAMED.get((key, name))
        if hit is not None and hit[0] == _VERSION[0] and hit[1] == arr_kind and hit[4]() is hit[3]:
            return hit[2], hit[3]
        if "," in name:
            tag, impl = _select_order(key, name, arr_kind)
            b, v = split_backend(tag)
        else:
            tag, impl = _select_named(key, name, arr_kind)
            b, v = split_backend(name)
        now = ((lambda: IMPLS.get(key, {}).get(b)) if v is None
               else (lambda: VARIANTS.get(key, {}).get(b, {}).get(v)))  # still registered?
        _NAMED[(key, name)] = (_VERSION[0], arr_kind, tag, impl, now)
        return tag, impl
    if arr_kind == "numpy":
        hit = _AUTO.get(key)
        if hit is not None and hit[0] == _VERSION[0] and IMPLS.get(key, {}).get(hit[1]) is hit[2]:
            return hit[1], hit[2]
    from . import backends

    if arr_kind == "cupy":
        backends.load("cuda")
        if "cuda" in IMPLS.get(key, {}):
            return "cuda", IMPLS[key]["cuda"]
        raise NotImplementedError(
            f"pydl.ops.{key}: no 'cuda' implementation for CuPy arrays "
            f"(pydl never copies to the host); backends that have it: {_have(key)}"
        )
    for b in CPU_ORDER:
        backends.load(b)
        impl = IMPLS.get(key, {}).get(b)
        if impl is not None:
            _AUTO[key] = (_VERSION[0], b, impl)
            return b, impl
    raise NotImplementedError(f"pydl.ops.{key}: no CPU backend implements it")


def _select_order(key: str, order: str, arr_kind: str):
    """(tag, implementation) from the first backend of a preference order that runs
    on ``arr_kind`` arrays and implements ``key``."""
    from . import backends

    names = backend_order(order)
    for full in names:
        b, variant = split_backend(full)
        if (b == "cuda") != (arr_kind == "cupy"):
            continue
        backends.load(b)
        impl = (IMPLS.get(key, {}).get(b) if variant is None
                else VARIANTS.get(key, {}).get(b, {}).get(variant))
        if impl is not None:
            return full, impl
    raise NotImplementedError(
        f"pydl.ops.{key}: no backend of the order {order!r} implements it for "
        f"{'CuPy' if arr_kind == 'cupy' else 'NumPy'} arrays; backends that do: {_have(key)}"
    )


def _select_named(key: str, full: str, arr_kind: str):
    """(tag, implementation) for a backend named by argument, context or environment."""
    from . import backends

    name, variant = split_backend(full)
    if name == "cuda" and arr_kind != "cupy":
        raise TypeError(
            f"pydl.ops.{key}: backend 'cuda' takes CuPy arrays, got NumPy arrays "
            f"(pydl never copies between host and device)"
        )
    if name != "cuda" and arr_kind == "cupy":
        raise TypeError(
            f"pydl.ops.{key}: backend {name!r} runs on the CPU and takes NumPy arrays, "
            f"got CuPy arrays (pydl never copies between device and host)"
        )
    backends.load(name)
    if variant is not None:
        impl = VARIANTS.get(key, {}).get(name, {}).get(variant)
        if impl is None:
            have = sorted(VARIANTS.get(key, {}).get(name, {}))
            raise NotImplementedError(
                f"pydl.ops.{key}: backend {name!r} has no variant {variant!r}; "
                f"its variants: {', '.join(have) or 'none'}"
            )
        return f"{name}:{variant}", impl
    impl = IMPLS.get(key, {}).get(name)
    if impl is None:
        why = backends.unavailable_reason(name)
        raise NotImplementedError(
            f"pydl.ops.{key}: backend {name!r} does not implement it"
            + (f" (backend unavailable: {why})" if why else "")
            + f"; backends that do: {_have(key)}"
        )
    return name, impl


#: (version, array kind, tag, implementation, its current registration) per (key, name given)
_NAMED: dict[tuple, tuple] = {}

#: automatic CPU choice per registry key, valid while _VERSION (bumped by register) holds
_AUTO: dict[str, tuple] = {}
_VERSION = [0]


def _have(key: str) -> str:
    """The backends implementing ``key`` (loads them all: error messages only)."""
    from . import backends

    backends.load()
    return ", ".join(b for b in BACKENDS if b in IMPLS.get(key, {})) or "none"


def _check_grad(spec: OpSpec, grad, a: dict):
    """Validate the upstream gradient against the forward's output shape(s)."""
    from .ops._checks import check_grad_array

    shapes = spec.out_shape(a)
    dtype = spec.dtype_of(a)
    if spec.outputs == 1:
        return check_grad_array(f"{spec.name}_backward: grad", grad, shapes, dtype)
    if not isinstance(grad, (tuple, list)) or len(grad) != spec.outputs:
        raise TypeError(
            f"{spec.name}_backward: grad must be a tuple of {spec.outputs} arrays "
            f"(None for an output with no gradient), got {type(grad).__name__}"
            + (f" of length {len(grad)}" if isinstance(grad, (tuple, list)) else "")
        )
    return tuple(
        None if g is None else check_grad_array(f"{spec.name}_backward: grad[{i}]", g, s, dtype)
        for i, (g, s) in enumerate(zip(grad, shapes))
    )
