"""One-call validation of pydl's CUDA backend on a GPU machine.

    python dev/cuda/validate.py [--quick] [--skip-pytest] [--only gemm,conv,pool]

1. builds every kernel family (NVRTC through CuPy) and reports compile times;
2. runs the GPU tests (tests/test_cuda.py and the cuda part of the
   conformance suite) in a subprocess;
3. checks every kernel against a float64 reference (CuPy float64 / PyTorch
   float64 on the GPU) on fresh random inputs at realistic and odd sizes,
   outputs poisoned with NaN first, by ||out - ref|| / ||ref||;
4. times pydl against cuBLAS (CuPy ``@``, PyTorch bf16), cuDNN (PyTorch conv)
   and PyTorch pooling with CUDA events (warm-up, median of batches of back-to-back calls);
5. writes ``$OUT/cuda_validate.json`` and ``$OUT/cuda_validate.md`` (``$OUT``
   defaults to ./cuda_validate_out) and prints the Markdown table last.

Every section catches its own failure, so one broken kernel does not hide
the others' results. See dev/cuda/README.md for the device-tool command.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from unittest import mock
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import cupy  # noqa: E402

import pydl  # noqa: E402
import pydl.registry  # noqa: E402
from pydl import _array  # noqa: E402
from pydl.backends.cuda import _loader  # noqa: E402
from pydl.backends.cuda import gemm as G  # noqa: E402

OUT = Path(os.environ.get("OUT") or ROOT / "cuda_validate_out")
RESULTS: dict = {"checks": [], "timings": [], "errors": [], "info": {}}
RNG = np.random.default_rng(int(time.time()))   # fresh inputs every run


def log(*a):
    print(*a, flush=True)


def section(name):
    def deco(f):
        def run(*a, **k):
            t0 = time.time()
            try:
                f(*a, **k)
            except Exception as e:  # keep going: record and report
                RESULTS["errors"].append({"section": name, "error": f"{type(e).__name__}: {e}",
                                          "traceback": traceback.format_exc()})
                log(f"!! {name}: {type(e).__name__}: {e}")
            log(f"-- {name}: {time.time() - t0:.1f} s")
        return run
    return deco


# -- helpers ---------------------------------------------------------------------------

def randn(*shape, dtype=np.float32):
    return cupy.asarray(RNG.standard_normal(shape).astype(dtype))


def rel(out, ref):
    out = cupy.asarray(out, dtype=np.float64)
    ref = cupy.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        return float("inf")
    if bool(cupy.isnan(out).any()) and not bool(cupy.isnan(ref).any()):
        return float("nan")
    den = float(cupy.linalg.norm(ref.ravel())) or 1.0
    return float(cupy.linalg.norm((out - ref).ravel())) / den


def acc_tol(n, eps=2.0 ** -24):
    """fp32 accumulation of n random terms: relative error ~ sqrt(n) * eps; 10x margin, at least 1e-5."""
    return max(1e-5, 10 * float(np.sqrt(max(n, 1))) * eps)


def check(name, out, ref, tol):
    e = rel(out, ref)
    ok = bool(np.isfinite(e) and e <= tol)
    RESULTS["checks"].append({"name": name, "rel_err": e, "tol": tol, "ok": ok})
    log(f"{'ok  ' if ok else 'FAIL'} {name}: rel err {e:.3e} (tol {tol:.0e})")
    return ok


def bench(fn, reps=20, warmup=3, batches=5):
    """(median, min, max) milliseconds per fn() over ``batches`` batches of ~reps/batches calls each,
    CUDA events on the current stream around each batch. Back-to-back calls keep the GPU queue fed,
    so a kernel shorter than the host's per-call work (Python dispatch, allocation, launch: ~0.1 ms)
    is timed as the kernel, not as the host (one event pair per call measured the host there: the
    same pooling call read 0.25 and 0.38 ms in two runs while Nsight Compute gave 0.18 both times)."""
    for _ in range(warmup):
        fn()
    cupy.cuda.get_current_stream().synchronize()
    per = max(2, reps // batches)
    times = []
    for _ in range(batches):
        s, e = cupy.cuda.Event(), cupy.cuda.Event()
        s.record()
        for _ in range(per):
            fn()
        e.record()
        e.synchronize()
        times.append(cupy.cuda.get_elapsed_time(s, e) / per)
    return float(np.median(times)), float(np.min(times)), float(np.max(times))


def record(group, case, impl, ms, *, flops=None, nbytes=None, baseline=None):
    row = {"group": group, "case": case, "impl": impl, "ms": ms[0], "ms_min": ms[1], "ms_max": ms[2]}
    if flops:
        row["tflops"] = flops / ms[0] / 1e9
    if nbytes:
        row["tb_s"] = nbytes / ms[0] / 1e9
    if baseline:
        row["baseline"] = baseline
    RESULTS["timings"].append(row)
    rate = f"{row['tflops']:.1f} TFLOP/s" if flops else (f"{row['tb_s']:.2f} TB/s" if nbytes else "")
    log(f"   {group} {case} {impl}: {ms[0]:.3f} ms {rate}")
    return row


def torch_or_none():
    try:
        import torch
        if torch.cuda.is_available():
            return torch
    except Exception:
        pass
    return None


def to_torch(x):
    import torch
    return torch.from_dlpack(x)


def poisoned():
    return _array.poisoned() if hasattr(_array, "poisoned") else _Null()


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# -- 1. build ----------------------------------------------------------------------------

@section("build")
def build():
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"]
    RESULTS["info"].update(device=name.decode() if isinstance(name, bytes) else str(name), cc=dev.compute_capability,
                           sms=props["multiProcessorCount"], cupy=cupy.__version__,
                           python=platform.python_version(), pydl=pydl.__file__)
    t = torch_or_none()
    RESULTS["info"]["torch"] = t.__version__ if t else None
    for fam in ("elementwise", "gemm", "conv", "pool"):
        t0 = time.time()
        mod = _loader.module(fam)
        mod.compile()                       # NVRTC now (extern "C" families have no names to resolve)
        for name in _loader._NAMES.get(fam, ()):
            mod.get_function(name)          # every declared instance must resolve
        RESULTS["info"][f"compile_{fam}_s"] = round(time.time() - t0, 2)
        log(f"built {fam} in {time.time() - t0:.1f} s")


# -- 2. pytest ---------------------------------------------------------------------------

@section("pytest")
def run_pytest():
    # every failure, not the first only (a first run on a GPU); synchronized launches, so that a fault
    # inside a kernel is reported against the test that launched it
    cmd = [sys.executable, "-m", "pytest", "-q", "--maxfail=50", "-rfE", "--no-header", "-p", "no:cacheprovider",
           "tests/test_cuda.py", "tests/test_conformance.py", "-k", "cuda"]
    t0 = time.time()
    env = dict(os.environ, PYDL_CUDA_SYNC="1")
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    tail = (p.stdout + p.stderr)[-6000:]
    RESULTS["info"]["pytest_rc"] = p.returncode
    RESULTS["info"]["pytest_s"] = round(time.time() - t0, 1)
    RESULTS["info"]["pytest_tail"] = tail
    (OUT / "pytest.txt").write_text(p.stdout + p.stderr)
    log(tail[-1500:])


# -- 3. correctness at size ------------------------------------------------------------

@section("check_gemm")
def check_gemm():
    for bm in ("128", "64"):  # both SIMT tiles on every layout
      for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        for (m, n, k) in ((1000, 777, 333), (128, 128, 8), (1, 1, 1), (513, 1031, 1), (257, 129, 2049),
                          (64, 3000, 576)):
            for ta in (False, True):
                for tb in (False, True):
                    a = randn(*((k, m) if ta else (m, k)), dtype=dtype)
                    b = randn(*((n, k) if tb else (k, n)), dtype=dtype)
                    ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
                    c = cupy.full((m, n), np.nan, dtype)
                    with mock.patch.dict(os.environ, {"PYDL_CUDA_SIMT_BM": bm}):
                        G.gemm(a, b, c, m, n, k, ta=ta, tb=tb, lda=a.shape[1], ldb=b.shape[1], ldc=n,
                               tensor_cores=False)
                    check(f"gemm BM{bm} {np.dtype(dtype).name} {m}x{n}x{k} ta={ta} tb={tb}", c, ref,
                          acc_tol(k) if dtype == np.float32 else tol)
    # batched, shared operand, epilogue
    a, b, bias = randn(7, 300, 200), randn(200, 150), randn(150)
    ref64 = a.astype(np.float64) @ b.astype(np.float64) + bias.astype(np.float64)
    c = cupy.full((7, 300, 150), np.nan, np.float32)
    G.gemm(a, b, c, 300, 150, 200, lda=200, ldb=150, ldc=150, batch=7, sa=300 * 200, sb=0, sc=300 * 150,
           bias=bias, bias_mode=1, act="relu", tensor_cores=False)
    check("gemm batched shared-b bias+relu", c, cupy.maximum(ref64, 0), 1e-5)
    # pydl ops at size
    x, w, bb = randn(512, 1024), randn(768, 1024) / 32, randn(768)
    for act in (None, "relu", "gelu", "tanh", "sigmoid"):
        y = pydl.ops.linear(x, w, bb, activation=act, backend="cuda")
        t = torch_or_none()
        if t is None:
            continue
        F = t.nn.functional
        z = F.linear(to_torch(x).double(), to_torch(w).double(), to_torch(bb).double())
        ref = {None: z, "relu": F.relu(z), "gelu": F.gelu(z), "tanh": t.tanh(z), "sigmoid": t.sigmoid(z)}[act]
        check(f"linear 512x1024->768 {act}", y, cupy.from_dlpack(ref), acc_tol(1024))
    # bf16 tensor cores
    for (m, n, k) in ((4096, 4096, 4096), (1000, 777, 336), (129, 65, 8), (8192, 768, 3072)):
        a, b = randn(m, k), randn(k, n)
        a16 = G.to_bf16(a, m, k, ld_in=k)[0]
        bt16 = G.to_bf16(b, n, k, trans=True, ld_in=n)[0]
        kp = a16.shape[1]
        # reference: the bf16-rounded operands in float64
        ar = _bf16_to_f64(a16)[:, :k]
        br = _bf16_to_f64(bt16)[:, :k]
        c = cupy.full((m, n), np.nan, np.float32)
        G.gemm_bf16(a16, bt16, c, m, n, k, lda=kp, ldb=kp, ldc=n)
        check(f"gemm bf16 {m}x{n}x{k} (vs rounded operands)", c, ar @ br.T, acc_tol(k))
        check(f"gemm bf16 {m}x{n}x{k} (vs float64 of fp32 inputs)", c,
              a.astype(np.float64) @ b.astype(np.float64), 1e-2)
    a, b = randn(3, 200, 133), randn(133, 120)
    with poisoned():
        y = pydl.ops.matmul(a, b, backend="cuda:bf16")
        da, db = pydl.ops.matmul_backward(cupy.ones_like(y), a, b, backend="cuda:bf16")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    check("matmul cuda:bf16 3-D @ 2-D (K=133, padded)", y, a64 @ b64, 1e-2)
    check("matmul_backward cuda:bf16 da", da, cupy.ones((3, 200, 120)) @ b64.T, 1e-2)
    check("matmul_backward cuda:bf16 db", db, (a64.swapaxes(1, 2) @ cupy.ones((3, 200, 120))).sum(0), 1e-2)


def _bf16_to_f64(h):
    u = h.astype(np.uint32) << 16
    return u.view(np.float32).astype(np.float64)


@section("check_conv_pool")
def check_conv_pool():
    t = torch_or_none()
    if t is None:
        raise RuntimeError("PyTorch with CUDA is needed for the conv/pool references")
    F = t.nn.functional
    convs = [
        dict(n=8, c=64, h=56, k=64, r=3, stride=1, pad=1, groups=1),
        dict(n=4, c=128, h=28, k=128, r=3, stride=2, pad=1, groups=1),
        dict(n=4, c=256, h=14, k=64, r=1, stride=1, pad=0, groups=1),
        dict(n=2, c=3, h=63, k=16, r=11, stride=4, pad=2, groups=1),
        dict(n=2, c=32, h=29, k=32, r=3, stride=1, pad=1, groups=32),
        dict(n=3, c=12, h=17, k=18, r=3, stride=2, pad=2, groups=3, dil=2),
    ]
    for s in convs:
        d = s.get("dil", 1)
        x, w = randn(s["n"], s["c"], s["h"], s["h"] + 1), randn(s["k"], s["c"] // s["groups"], s["r"], s["r"])
        b = randn(s["k"])
        xt, wt, bt = (to_torch(v).double().requires_grad_() for v in (x, w, b))
        ref = F.conv2d(xt, wt, bt, stride=s["stride"], padding=s["pad"], dilation=d, groups=s["groups"])
        gy = randn(*ref.shape)
        ref.backward(to_torch(gy).double())
        with poisoned():
            y = pydl.ops.conv2d(x, w, b, stride=s["stride"], padding=s["pad"], dilation=d, groups=s["groups"],
                                backend="cuda")
            dx, dw, db = pydl.ops.conv2d_backward(gy, x, w, b, stride=s["stride"], padding=s["pad"], dilation=d,
                                                  groups=s["groups"], backend="cuda")
        tag = f"conv2d N{s['n']} C{s['c']} {s['h']}x{s['h'] + 1} K{s['k']} R{s['r']} s{s['stride']} g{s['groups']}"
        # fp32 accumulation over n terms: relative error ~ sqrt(n) * 2^-24 for random data; 10x margin
        tol = acc_tol
        crs, L = x.shape[1] // s["groups"] * s["r"] ** 2, ref.shape[2] * ref.shape[3]
        check(tag + " fwd", y, cupy.from_dlpack(ref.detach()), tol(crs))
        check(tag + " dx", dx, cupy.from_dlpack(xt.grad), tol(s["k"] // s["groups"] * s["r"] ** 2))
        check(tag + " dw", dw, cupy.from_dlpack(wt.grad), tol(s["n"] * L))
        check(tag + " db", db, cupy.from_dlpack(bt.grad), tol(s["n"] * L))
    pools = [("max", dict(kernel_size=2, stride=2)), ("max", dict(kernel_size=3, stride=2, padding=1)),
             ("max", dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)),
             ("avg", dict(kernel_size=2, stride=2)),
             ("avg", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
             ("avg", dict(kernel_size=3, stride=1, padding=1, divisor_override=5)),
             ("adaptive", dict(output_size=(7, 5))), ("adaptive", dict(output_size=(1, 1)))]
    for kind, kw in pools:
        x = randn(8, 32, 57, 61)
        xt = to_torch(x).double().requires_grad_()
        tf = {"max": F.max_pool2d, "avg": F.avg_pool2d, "adaptive": F.adaptive_avg_pool2d}[kind]
        ref = tf(xt, **kw)
        gy = randn(*ref.shape)
        ref.backward(to_torch(gy).double())
        op = {"max": "max_pool2d", "avg": "avg_pool2d", "adaptive": "adaptive_avg_pool2d"}[kind]
        with poisoned():
            y = getattr(pydl.ops, op)(x, **kw, backend="cuda")
            (dx,) = getattr(pydl.ops, op + "_backward")(gy, x, **kw, backend="cuda")
        # a max is exact; an average sums up to the whole plane (adaptive 1x1: 57*61 terms) in fp32
        tol = 1e-6 if kind == "max" else acc_tol(x.shape[2] * x.shape[3] if kind == "adaptive" else 9)
        check(f"{op} {kw} fwd", y, cupy.from_dlpack(ref.detach()), tol)
        check(f"{op} {kw} bwd", dx, cupy.from_dlpack(xt.grad), tol)


# -- 4. timings ----------------------------------------------------------------------------

@section("time_gemm")
def time_gemm(quick):
    sizes = [(4096, 4096, 4096)] if quick else [(4096, 4096, 4096), (8192, 8192, 8192)]
    for m, n, k in sizes:
        a, b = randn(m, k), randn(k, n)
        c = cupy.empty((m, n), np.float32)
        fl = 2 * m * n * k
        base = record("gemm fp32", f"{m}x{n}x{k}", "cuBLAS (CuPy @)", bench(lambda: a @ b), flops=fl)
        for ta, tb in ((False, False), (True, False), (False, True)):
            A = cupy.ascontiguousarray(a.T) if ta else a
            B = cupy.ascontiguousarray(b.T) if tb else b
            ms = bench(lambda: G.gemm(A, B, c, m, n, k, ta=ta, tb=tb, lda=A.shape[1], ldb=B.shape[1], ldc=n,
                                      tensor_cores=False))
            record("gemm fp32", f"{m}x{n}x{k}", f"pydl simt ta={ta} tb={tb}", ms, flops=fl, baseline=base["ms"])
    t = torch_or_none()
    shapes = [(4096, 4096, 4096), (8192, 8192, 8192), (8192, 3072, 768), (8192, 768, 3072)]
    for m, n, k in shapes[:1] if quick else shapes:
        a, b = randn(m, k), randn(k, n)
        a16 = G.to_bf16(a, m, k, ld_in=k)[0]
        bt16 = G.to_bf16(b, n, k, trans=True, ld_in=n)[0]
        c16 = cupy.empty((m, n), np.uint16)
        fl = 2 * m * n * k
        base = None
        if t is not None:
            ta_, tb_ = to_torch(a).bfloat16(), to_torch(b).bfloat16()
            base = record("gemm bf16", f"{m}x{n}x{k}", "cuBLAS (torch bf16)", bench(lambda: ta_ @ tb_), flops=fl)
        ms = bench(lambda: G.gemm_bf16(a16, bt16, c16, m, n, k, lda=k, ldb=k, ldc=n))
        record("gemm bf16", f"{m}x{n}x{k}", f"pydl mma.sync 128x{G.TC_TILE[0]} (bf16 out)", ms, flops=fl,
               baseline=base["ms"] if base else None)


RESNET = [  # (N, C, H, K, R, stride, pad) at N64 (issue 4's shapes, batch raised to 64)
    (64, 64, 56, 64, 3, 1, 1), (64, 128, 28, 128, 3, 2, 1), (64, 256, 14, 256, 3, 1, 1),
    (64, 256, 14, 64, 1, 1, 0),
]


@section("time_conv")
def time_conv(quick):
    t = torch_or_none()
    F = t.nn.functional if t else None
    for (n, c, h, k, r, s, p) in RESNET[:1] if quick else RESNET:
        x, w, b = randn(n, c, h, h), randn(k, c, r, r), randn(k)
        oh = (h + 2 * p - r) // s + 1
        fl = 2 * n * k * oh * oh * c * r * r
        gy = randn(n, k, oh, oh)
        case = f"N{n} C{c} {h}x{h} K{k} R{r} s{s}"
        base = base_fb = None
        if t is not None:
            xt, wt, bt, gt = to_torch(x), to_torch(w), to_torch(b), to_torch(gy)
            t.backends.cudnn.allow_tf32 = False
            t.backends.cudnn.benchmark = True
            base = record("conv fp32 fwd", case, "cuDNN (torch, tf32 off)",
                          bench(lambda: F.conv2d(xt, wt, bt, stride=s, padding=p)), flops=fl)
            xg, wg, bg = (v.clone().requires_grad_() for v in (xt, wt, bt))

            def torch_fb():
                y = F.conv2d(xg, wg, bg, stride=s, padding=p)
                t.autograd.grad(y, (xg, wg, bg), gt)
            base_fb = record("conv fp32 fwd+bwd", case, "cuDNN (torch, tf32 off)", bench(torch_fb, reps=10),
                             flops=3 * fl)
            xb, wb, bb = xt.bfloat16(), wt.bfloat16(), bt.bfloat16()
            record("conv bf16 fwd", case, "cuDNN (torch bf16)",
                   bench(lambda: F.conv2d(xb, wb, bb, stride=s, padding=p)), flops=fl)
        ms = bench(lambda: pydl.ops.conv2d(x, w, b, stride=s, padding=p, backend="cuda"), reps=10)
        record("conv fp32 fwd", case, "pydl im2col+simt", ms, flops=fl, baseline=base["ms"] if base else None)
        if k <= 64:  # the adapter's 64x256 SIMT tile against the 128x128 one
            with mock.patch.dict(os.environ, {"PYDL_CUDA_SIMT_BM": "128"}):
                ms = bench(lambda: pydl.ops.conv2d(x, w, b, stride=s, padding=p, backend="cuda"), reps=10)
            record("conv fp32 fwd", case, "pydl im2col+simt, 128x128 tile", ms, flops=fl,
                   baseline=base["ms"] if base else None)

        def pydl_fb():
            pydl.ops.conv2d(x, w, b, stride=s, padding=p, backend="cuda")
            pydl.ops.conv2d_backward(gy, x, w, b, stride=s, padding=p, backend="cuda")
        record("conv fp32 fwd+bwd", case, "pydl im2col+simt", bench(pydl_fb, reps=5), flops=3 * fl,
               baseline=base_fb["ms"] if base_fb else None)
        os.environ["PYDL_CUDA_MATMUL_PRECISION"] = "bf16"
        try:
            ms = bench(lambda: pydl.ops.conv2d(x, w, b, stride=s, padding=p, backend="cuda"), reps=10)
            record("conv bf16 fwd", case, "pydl im2col+mma (fp32 io)", ms, flops=fl)
        finally:
            os.environ.pop("PYDL_CUDA_MATMUL_PRECISION")


@section("time_pool")
def time_pool(quick):
    t = torch_or_none()
    F = t.nn.functional if t else None
    x = randn(64, 64, 112, 112)
    nb = x.nbytes
    y = cupy.empty_like(x)
    record("copy", "N64 C64 112x112", "cupy copy", bench(lambda: cupy.copyto(y, x)), nbytes=2 * nb)
    cases = [("max_pool2d", dict(kernel_size=2, stride=2)), ("max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
             ("avg_pool2d", dict(kernel_size=2, stride=2)), ("adaptive_avg_pool2d", dict(output_size=(7, 7)))]
    for op, kw in cases[:1] if quick else cases:
        out = getattr(pydl.ops, op)(x, **kw, backend="cuda")
        gy = randn(*out.shape)
        fwd_bytes = nb + out.nbytes + (out.size * 8 if op == "max_pool2d" else 0)
        bwd_bytes = nb + out.nbytes + (out.size * 8 if op == "max_pool2d" else 0)
        base = base_fb = None
        if t is not None:
            tf = getattr(F, op)
            xt, gt = to_torch(x), to_torch(gy)
            base = record(f"{op} fwd", str(kw), "torch", bench(lambda: tf(xt, **kw)), nbytes=fwd_bytes)
            xg = xt.clone().requires_grad_()

            def torch_fb():
                t.autograd.grad(tf(xg, **kw), (xg,), gt)
            base_fb = record(f"{op} fwd+bwd", str(kw), "torch", bench(torch_fb), nbytes=fwd_bytes + bwd_bytes)
        record(f"{op} fwd", str(kw), "pydl", bench(lambda: getattr(pydl.ops, op)(x, **kw, backend="cuda")),
               nbytes=fwd_bytes, baseline=base["ms"] if base else None)

        spec = pydl.registry.SPECS[op]

        def pydl_fb():  # the forward's saved state (max_pool2d's indices) goes to the backward, as in torch
            _, saved = spec.with_saved(x, **kw, backend="cuda")
            getattr(pydl.ops, op + "_backward")(gy, x, **kw, saved=saved, backend="cuda")
        record(f"{op} fwd+bwd", str(kw), "pydl", bench(pydl_fb), nbytes=fwd_bytes + bwd_bytes,
               baseline=base_fb["ms"] if base_fb else None)


# -- 5. report -----------------------------------------------------------------------------

def markdown():
    lines = [f"# pydl CUDA validation: {RESULTS['info'].get('device')} (cc {RESULTS['info'].get('cc')}), "
             f"CuPy {RESULTS['info'].get('cupy')}, torch {RESULTS['info'].get('torch')}", ""]
    n_ok = sum(c["ok"] for c in RESULTS["checks"])
    lines += [f"Checks: {n_ok}/{len(RESULTS['checks'])} passed; pytest rc {RESULTS['info'].get('pytest_rc')}; "
              f"errors: {len(RESULTS['errors'])}", ""]
    for c in RESULTS["checks"]:
        if not c["ok"]:
            lines.append(f"- FAIL {c['name']}: {c['rel_err']:.3e} > {c['tol']:.0e}")
    for e in RESULTS["errors"]:
        lines.append(f"- ERROR in {e['section']}: {e['error']}")
    lines += ["", "| group | case | impl | ms | TFLOP/s | TB/s | x baseline |", "|---|---|---|---|---|---|---|"]
    for r in RESULTS["timings"]:
        ratio = f"{r['baseline'] / r['ms']:.2f}" if r.get("baseline") else ""
        lines.append(f"| {r['group']} | {r['case']} | {r['impl']} | {r['ms']:.3f} | "
                     f"{r.get('tflops', 0) and round(r['tflops'], 1) or ''} | "
                     f"{r.get('tb_s', 0) and round(r['tb_s'], 2) or ''} | {ratio} |")
    return "\n".join(lines) + "\n"


def save(t0) -> str:
    """Write the JSON and the table so far (a call cut at its time limit keeps what it measured)."""
    RESULTS["info"]["total_s"] = round(time.time() - t0, 1)
    (OUT / "cuda_validate.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    md = markdown()
    (OUT / "cuda_validate.md").write_text(md)
    return md


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one size per group")
    ap.add_argument("--skip-pytest", action="store_true")
    ap.add_argument("--only", default="", help="comma list of: build,pytest,check,gemm,conv,pool")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    want = lambda s: not only or s in only  # noqa: E731
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    build()
    if want("pytest") and not args.skip_pytest:
        run_pytest()
    save(t0)
    if want("check"):
        # synchronized launches: a fault is reported against its kernel and check, not a later one
        _loader._SYNC, sync = True, _loader._SYNC
        try:
            check_gemm()
            save(t0)
            check_conv_pool()
            save(t0)
        finally:
            _loader._SYNC = sync
    for name, fn in (("gemm", time_gemm), ("conv", time_conv), ("pool", time_pool)):
        if want(name):
            fn(args.quick)
            save(t0)
    md = save(t0)
    log(md)
    return 0 if not RESULTS["errors"] and all(c["ok"] for c in RESULTS["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
