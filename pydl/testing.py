"""Checking kernels against the reference: used by the conformance tests and
by ``pydl check``.

One validator (:func:`assert_close`, which names the first mismatching
indices), one way to run an op on a backend with outputs poisoned
(:func:`run_forward`, :func:`run_backward`), a finite-difference gradient
check, and the PyTorch oracle.
"""
from __future__ import annotations

import numpy as np

from . import _array
from .registry import OpSpec


def _as_tuple(out, n):
    return tuple(out) if n > 1 else (out,)


def round_bf16(x):
    """float32 array rounded to the nearest bfloat16 (ties to even), as float32."""
    b = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    return b.astype(np.uint32).view(np.float32).reshape(np.shape(x))


def copy_args(args: dict, dtype=None, xp=None) -> dict:
    """Fresh copies of every array (ops may update running statistics in
    place), float arrays cast to ``dtype``, moved to ``xp`` (numpy/cupy)."""
    out = {}
    for k, v in args.items():
        if _array.kind(v) is not None:
            v = v.astype(dtype) if (dtype is not None and v.dtype.kind == "f") else v.copy(order="K")
            if xp is not None and _array.module(v) is not xp:
                v = xp.asarray(v)
        out[k] = v
    return out


def to_numpy(a):
    if a is None:
        return None
    if _array.kind(a) == "cupy":
        return a.get()
    return np.asarray(a)


def assert_close(name, out, ref, rtol, atol, max_report=5):
    """``|out - ref| <= atol + rtol * |ref|`` elementwise; NaN and inf must
    sit at the same places in both. Raises AssertionError listing the first
    mismatching indices."""
    out, ref = to_numpy(out), to_numpy(ref)
    if out is None or ref is None:
        if out is not ref:
            raise AssertionError(f"{name}: got {type(out).__name__}, expected {type(ref).__name__}")
        return
    if out.shape != ref.shape:
        raise AssertionError(f"{name}: shape {out.shape}, expected {ref.shape}")
    o = out.astype(np.float64)
    r = ref.astype(np.float64)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(r)
        bad = ~finite & ~((np.isnan(o) & np.isnan(r)) | (o == r))
        bad |= finite & ~(np.abs(o - r) <= atol + rtol * np.abs(r))
    if bad.any():
        idx = np.argwhere(bad)[:max_report]
        lines = [f"  at {tuple(int(i) for i in ix)}: got {o[tuple(ix)]!r}, expected {r[tuple(ix)]!r}" for ix in idx]
        with np.errstate(invalid="ignore"):
            err = np.nanmax(np.abs(o - r)[finite]) if finite.any() else float("nan")
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.size} elements differ (rtol={rtol:g}, atol={atol:g}, "
            f"max abs err {err:.3g}):\n" + "\n".join(lines)
        )


def upstream_grads(spec: OpSpec, a: dict, rng, dtype):
    """Random upstream gradient(s) shaped like the forward's output(s)."""
    shapes = _as_tuple(spec.out_shape(a), spec.outputs)
    gs = tuple(rng.standard_normal(s).astype(dtype) for s in shapes)
    return gs if spec.outputs > 1 else gs[0]


def run_forward(spec: OpSpec, args: dict, backend: str, dtype=None, xp=None, saved=False, fresh=True):
    """Forward on ``backend`` with poisoned outputs; returns output (and saved).

    ``fresh=False`` passes ``args`` as they are (to test their memory layout)."""
    args = copy_args(args, dtype, xp) if fresh else args
    with _array.poisoned():
        out, sv = spec.with_saved(**args, backend=backend)
    return (out, sv) if saved else out


def run_backward(spec: OpSpec, grad, args: dict, backend: str, dtype=None, xp=None, saved=None, fresh=True):
    """Backward on ``backend`` with poisoned outputs; returns the gradients."""
    args = copy_args(args, dtype, xp) if fresh else args
    with _array.poisoned():
        return spec.backward(grad, **args, saved=saved, backend=backend)


def finite_difference_check(spec: OpSpec, args: dict, rng, h=1e-6, max_points=24, tol=1e-5):
    """Reference backward vs central differences of sum(w * out), float64."""
    a64 = copy_args(args, np.float64)
    bound = spec.bind((), copy_args(a64))
    w = upstream_grads(spec, bound, rng, np.float64)
    ws = _as_tuple(w, spec.outputs)
    grads = spec.backward(w, **copy_args(a64), backend="numpy")

    def loss(trial):
        out = _as_tuple(spec.forward(**trial, backend="numpy"), spec.outputs)
        return sum(float(np.sum(np.nan_to_num(o) * g)) for o, g in zip(out, ws))

    for name, g in zip(spec.differentiable, grads):
        x = a64.get(name)
        if x is None or name in spec.fd_skip:
            continue
        if g is None or g.shape != x.shape:
            raise AssertionError(f"{spec.name}: gradient of {name} has shape "
                                 f"{None if g is None else g.shape}, expected {x.shape}")
        if x.size == 0:
            continue
        points = rng.choice(x.size, size=min(max_points, x.size), replace=False)
        for p in points:
            trial = copy_args(a64)
            trial[name].flat[p] += h
            up = loss(trial)
            trial = copy_args(a64)
            trial[name].flat[p] -= h
            down = loss(trial)
            num = (up - down) / (2 * h)
            ana = float(g.flat[p])
            if not abs(num - ana) <= tol * (1 + abs(ana) + abs(num)):
                idx = np.unravel_index(p, x.shape)
                raise AssertionError(
                    f"{spec.name}: d/d{name}{tuple(map(int, idx))}: backward gives {ana!r}, "
                    f"finite differences {num!r}"
                )


def torch_check(spec: OpSpec, args: dict, rng):
    """The float64 reference against PyTorch: forward and gradients."""
    import torch
    import torch.nn.functional as F

    a64 = spec.bind((), copy_args(args, np.float64))
    ta = {}
    for k, v in a64.items():
        if _array.kind(v) is not None:
            t = torch.from_numpy(np.array(v))
            if k in spec.differentiable and v.dtype.kind == "f":
                t.requires_grad_(True)
            ta[k] = t
        else:
            ta[k] = v
    tout = _as_tuple(spec.torch(torch, F, ta), spec.outputs)
    ref = _as_tuple(spec.forward(**copy_args(a64), backend="numpy"), spec.outputs)
    rtol, atol = spec.tol["float64"]
    for i, (t, r) in enumerate(zip(tout, ref)):
        assert_close(f"{spec.name} output[{i}] vs torch", t.detach().numpy(), r, max(rtol, 1e-10), max(atol, 1e-12))
    w = upstream_grads(spec, a64, rng, np.float64)
    ws = _as_tuple(w, spec.outputs)
    grads = spec.backward(w, **copy_args(a64), backend="numpy")
    # an input differentiable only in its float form (cross_entropy's target) is left out as indices
    names = [k for k in spec.differentiable if isinstance(ta.get(k), torch.Tensor) and ta[k].requires_grad]
    inputs = [ta[k] for k in names]
    if not inputs:
        return
    pairs = [(t, torch.from_numpy(np.array(g))) for t, g in zip(tout, ws) if t.requires_grad]
    tgrads = torch.autograd.grad([p[0] for p in pairs], inputs, [p[1] for p in pairs], allow_unused=True)
    rtol, atol = spec.grad_tolerance("float64")
    for name, tg in zip(names, tgrads):
        g = grads[spec.differentiable.index(name)]
        tg = np.zeros_like(g) if tg is None else tg.numpy()
        assert_close(f"{spec.name} d{name} vs torch", g, tg, max(rtol, 1e-9), max(atol, 1e-11))


def layout_variants(args: dict) -> dict[str, dict]:
    """The same values as non-contiguous views and as Fortran-ordered arrays."""
    strided, fortran = {}, {}
    for k, v in args.items():
        if _array.kind(v) is not None and v.ndim >= 1:
            xp = _array.module(v)
            big = xp.empty(v.shape[:-1] + (2 * v.shape[-1],), dtype=v.dtype)
            big[..., 1::2] = v
            strided[k] = big[..., 1::2]
            fortran[k] = xp.asfortranarray(v)
        else:
            strided[k] = fortran[k] = v
    return {"strided": strided, "fortran": fortran}
