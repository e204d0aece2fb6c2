"""Huge and hostile inputs (issue 14, item 4): every bad-input probe raises the documented
error, naming the argument, before any kernel runs; valid but extreme inputs (a stride far
past the input, broadcast and read-only arrays, NumPy integer scalars, empty batches) give
the reference's answer on every backend; workspace decisions never need the memory a
hostile geometry would ask for. The probes themselves are in tests/probes.py
(``python tests/probes.py`` counts and runs all of them, the specs' bad cases included).
"""
import numpy as np
import pytest

import probes
from pydl import _array, backends, registry
from pydl.ops import _checks as ck
from pydl.testing import assert_close, copy_args

backends.load()
SPECS = registry.SPECS
HOSTILE = probes.hostile()
HOSTILE_OPS = sorted({p.op for p in HOSTILE})
NATIVE_OPS = sorted(n for n in SPECS if any(b in registry.IMPLS.get(n, {}) for b in ("cpp", "cython", "numba")))


def test_probe_count():
    """Issue 14's target: at least 150 distinct bad-input probes across ops and backends."""
    pairs = probes.enumerate_probes(("hostile",))
    assert len(pairs) >= 150 * 4, len(pairs)
    assert {p.op for p, _ in pairs} >= set(NATIVE_OPS), "an op with a native kernel has no hostile probe"
    assert len({(p.op, p.id) for p in HOSTILE}) == len(HOSTILE), "two probes share an id"


@pytest.mark.parametrize("op", HOSTILE_OPS)
def test_hostile_probes(op):
    """Each hostile probe of ``op``, forward and backward, on every CPU backend (and every
    named variant): the documented exception, the op and argument named, raised by the
    normalizer (so before any kernel)."""
    fails = []
    names = [b for b in probes.cpu_backends(op)]
    names += [f"{b}:{v}" for b in names for v in sorted(registry.VARIANTS.get(op, {}).get(b, {}))]
    for p in (p for p in HOSTILE if p.op == op):
        for b in names:
            for backward in (False, True):
                why = probes.check(p, b, backward)
                if why:
                    fails.append(f"[{p.id}] on {b}{' backward' if backward else ''}: {why}")
    assert not fails, "\n".join(fails[:20])


# -- the memory decisions, without the memory ------------------------------------------------

def test_fits_decides_without_allocating(monkeypatch):
    monkeypatch.setattr(ck, "_LIMIT", [8 << 30])
    ck.fits("x", (1 << 20, 1 << 10), 4)                       # 4 GiB: fits 8
    with pytest.raises(MemoryError, match=r"^x, w: the output would have shape \(4194304, 1024\) "):
        ck.fits("x, w", (1 << 22, 1 << 10), 4)                # 16 GiB
    with pytest.raises(ValueError, match="more than a 64-bit size can count"):
        ck.fits("padding", (1 << 40, 1 << 40), 4)
    with pytest.raises(MemoryError, match="x: the array would have shape"):
        ck.array("x", np.broadcast_to(np.float32(1), (1 << 32,)))
    assert ck.memory_limit() == 8 << 30


def test_memory_limit_is_the_machines():
    with open("/proc/meminfo") as f:
        total = int(f.readline().split()[1]) * 1024
    assert 1 << 28 < ck.memory_limit() <= total + (64 << 30)


@pytest.mark.parametrize("backend", ["cython", "numba", "numpy", "cpp"])
def test_conv_output_past_memory_refused_before_allocating(backend, monkeypatch):
    """padding 2**14 on a 6x6 image: an 8 GB output on this 1 GiB 'machine': MemoryError from
    the spec, nothing allocated (a patched allocator would fail the test)."""
    monkeypatch.setattr(ck, "_LIMIT", [1 << 30])
    x, w = np.ones((2, 4, 6, 6), np.float32), np.ones((3, 4, 3, 3), np.float32)
    monkeypatch.setattr(_array, "empty", lambda *a, **k: pytest.fail("allocated an output"))
    with pytest.raises(MemoryError, match=r"^pydl.ops.conv2d: x, weight, stride, padding, dilation: "):
        registry.SPECS["conv2d"].forward(x, w, padding=2 ** 14, backend=backend)


def test_numba_conv_never_holds_a_whole_image_of_columns(monkeypatch):
    """numba's chunked driver (for fewer images than threads) holds one image's column matrix
    at least; an image whose columns exceed the workspace goes to the tiled per-image driver
    (a 13x13 kernel over 64 channels of 512x512 would need 11 GB)."""
    nb = pytest.importorskip("numba")
    from pydl.backends import _conv_im2col

    x, w = np.ones((1, 64, 512, 512), np.float32), np.ones((1, 64, 13, 13), np.float32)
    assert not _conv_im2col.image_fits(x, w, (1, 1), (6, 6), 512 * 512)
    assert _conv_im2col.image_fits(x, np.ones((1, 64, 1, 1), np.float32), (1, 1), (0, 0), 512 * 512)
    # the same decision at a small size: a workspace of 1 KB makes this 1-image conv "huge"
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((1, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3))
    ref = registry.SPECS["conv2d"].forward(x, w, padding=1, backend="numpy")
    g = rng.standard_normal(ref.shape)
    ref_g = registry.SPECS["conv2d"].backward(g, x, w, padding=1, backend="numpy")
    monkeypatch.setattr(_conv_im2col, "WORKSPACE_BYTES", 1024)
    monkeypatch.setattr(_conv_im2col, "forward", lambda *a, **k: pytest.fail("whole-image columns"))
    monkeypatch.setattr(_conv_im2col, "backward", lambda *a, **k: pytest.fail("whole-image columns"))
    assert nb.get_num_threads() > 1 or True  # with one thread there is no fallback either way
    with _array.poisoned():
        out = registry.SPECS["conv2d"].forward(x, w, padding=1, backend="numba")
        got = registry.SPECS["conv2d"].backward(g, x, w, padding=1, backend="numba")
    assert_close("numba conv2d (tiled)", out, ref, 1e-12, 1e-12)
    for name, a, b in zip(("dx", "dw", "db"), got, ref_g):
        assert_close(f"numba conv2d {name} (tiled)", a, b, 1e-12, 1e-12)


# -- valid but extreme: the reference's answer on every backend ------------------------------

def _all_paths(op):
    have = [b for b in registry.CPU_ORDER if b in registry.IMPLS.get(op, {})]
    return have + [f"{b}:{v}" for b in have for v in sorted(registry.VARIANTS.get(op, {}).get(b, {}))]


def _agree(op, args, grad_too=True, dtype=np.float64):
    """``op`` on every CPU backend and variant equals the reference (forward and backward)."""
    spec = SPECS[op]
    tol = spec.tol[np.dtype(dtype).name]
    ref = spec.forward(**copy_args(args), backend="numpy")
    refs = ref if spec.outputs > 1 else (ref,)
    rng = np.random.default_rng(0)
    g = tuple(rng.standard_normal(r.shape).astype(dtype) for r in refs)
    g = g if spec.outputs > 1 else g[0]
    ref_g = spec.backward(g, **copy_args(args), backend="numpy") if grad_too else ()
    for b in _all_paths(op):
        with _array.poisoned():
            out = spec.forward(**copy_args(args), backend=b)
        for i, (o, r) in enumerate(zip(out if spec.outputs > 1 else (out,), refs)):
            assert_close(f"{op} on {b} output {i}", o, r, *tol)
        if grad_too and f"{b}".split(":")[0] in registry.IMPLS.get(op + "_backward", {}):
            if ":" in b and b.split(":")[1] not in registry.VARIANTS.get(op + "_backward", {}).get(b.split(":")[0], {}):
                continue
            with _array.poisoned():
                got = spec.backward(g, **copy_args(args), backend=b)
            for wrt, o, r in zip(spec.differentiable, got, ref_g):
                assert_close(f"{op} on {b} d{wrt}", o, r, *spec.grad_tolerance(np.dtype(dtype)))


@pytest.mark.parametrize("stride", [7, 2 ** 31 - 1, (1, 2 ** 31 - 1), (2 ** 31 - 1, 3)])
def test_conv_stride_past_the_input(stride):
    """Regression: a stride wider than the row (one output column) made the cpp im2col and
    smallk paths size their width-phase buffers by the stride (std::bad_alloc inside an
    OpenMP region: the process aborted), and cython/numba ask for as much."""
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 4, 6, 6)), rng.standard_normal((3, 4, 3, 3)), rng.standard_normal(3)
    _agree("conv2d", dict(x=x, weight=w, bias=b, stride=stride, padding=1))
    _agree("im2col", dict(x=x, kernel_size=3, stride=stride, padding=1))


def test_conv_huge_padding_small_output():
    """Regression: direct and smallk copy zero-padded planes, which grow with the padding,
    not the output: padding 2**14 with stride 2**14 on a 6x6 image is a 2x2 output but a
    4 GB plane per channel (the process aborted when the allocation failed in a parallel
    region); past a few times the input, the cpp paths hand such a convolution to the
    im2col tiles. At 2**10 here (the reference pads for real: 34 MB a channel)."""
    from pydl.backends.cpp import conv as cpp_conv

    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((1, 2, 6, 6)), rng.standard_normal((2, 2, 3, 3))
    _agree("conv2d", dict(x=x, weight=w, stride=2 ** 10, padding=2 ** 10 - 3))
    for forced in ("cpp", "cpp:smallk", "cpp:direct"):
        out = SPECS["conv2d"].forward(x, w, stride=2 ** 10, padding=2 ** 10 - 3, backend=forced)
        SPECS["conv2d"].backward(np.ones_like(out), x, w, stride=2 ** 10, padding=2 ** 10 - 3, backend=forced)
        assert cpp_conv.last_path == {"forward": "im2col", "backward": "im2col"}, (forced, cpp_conv.last_path)
    dw = rng.standard_normal((2, 1, 3, 3))  # depthwise: the direct path
    _agree("conv2d", dict(x=x, weight=dw, stride=2 ** 10, padding=2 ** 10, groups=2))


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_pool_stride_past_the_input(op):
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 5))
    _agree(op, dict(x=x, kernel_size=3, stride=2 ** 31 - 1))
    _agree(op, dict(x=x, kernel_size=(3, 2), stride=(2, 2 ** 31 - 1), padding=1))


def test_numpy_integer_scalars_are_ints():
    """NumPy integer scalars (what shape arithmetic gives) are ints, any width."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((1, 4, 7, 7)), rng.standard_normal((4, 2, 3, 3))
    for t in (np.int8, np.int32, np.int64, np.uint16):
        a = dict(x=x, weight=w, stride=t(2), padding=(t(1), 1), dilation=t(1), groups=t(2))
        _agree("conv2d", a)
        _agree("max_pool2d", dict(x=x, kernel_size=t(3), stride=(t(2), t(1)), padding=t(1)))
        _agree("softmax", dict(x=x, dim=t(1)))
        _agree("adaptive_avg_pool2d", dict(x=x, output_size=(t(3), None)))


@pytest.mark.parametrize("op", NATIVE_OPS)
def test_read_only_and_broadcast_inputs_accepted(op):
    """Inputs that are read-only (np.broadcast_to views, arrays with writeable=False) are
    read, never written: every backend takes them and gives the reference's answer."""
    spec = SPECS[op]
    case = max((c for c in spec.cases(np.random.default_rng(5), np.dtype(np.float64))
                if all(getattr(v, "size", 1) for v in c.args.values())),
               key=lambda c: sum(getattr(v, "size", 0) for v in c.args.values()))
    args = {}
    for k, v in case.args.items():
        if isinstance(v, np.ndarray):
            v = v.copy()
            # the running statistics batch_norm / instance_norm update in place stay writeable
            # (read-only ones are refused: test_in_place_paths_refuse_read_only_buffers)
            v.flags.writeable = k in spec.mutates
        args[k] = v
    first = spec.differentiable[0]
    x = case.args[first]
    args[first] = np.broadcast_to(x[:1], x.shape) if x.ndim and x.shape[0] > 1 else args[first]
    assert not args[first].flags.writeable
    ref = spec.forward(**copy_args(args), backend="numpy")
    for b in _all_paths(op):
        out = spec.forward(**args, backend=b)  # the read-only arrays themselves, not copies
        for i, (o, r) in enumerate(zip(out if spec.outputs > 1 else (out,), ref if spec.outputs > 1 else (ref,))):
            assert_close(f"{op} on {b} (read-only inputs) output {i}", o, r, *spec.tol["float64"])
    assert not args[first].flags.writeable


def test_in_place_paths_refuse_read_only_buffers():
    """pydl's only in-place writes are the running statistics of batch_norm (training) and
    instance_norm (use_input_stats): read-only ones are refused, naming the argument, before
    anything is computed, on every backend (the fuzzer found instance_norm's cpp adapter
    failing inside NumPy instead). torch's inplace=True is refused outright: the ops return
    new arrays."""
    x = np.random.default_rng(6).standard_normal((4, 3, 2, 2))
    for op, flag in (("batch_norm", dict(training=True)), ("instance_norm", dict(use_input_stats=True))):
        for b in registry.SPECS[op].implementations():
            for name in ("running_mean", "running_var"):
                stats = dict(running_mean=np.zeros(3), running_var=np.ones(3))
                stats[name] = np.broadcast_to(stats[name][:1], (3,))  # a read-only view
                with pytest.raises(ValueError, match=f"pydl.ops.{op}: {name}: .*writeable"):
                    registry.SPECS[op].forward(x, **stats, **flag, backend=b)
                assert stats["running_mean"].sum() == 0 and stats["running_var"].sum() == 3
    for op in ("relu", "leaky_relu", "elu"):
        with pytest.raises(ValueError, match="inplace"):
            registry.SPECS[op].forward(x, inplace=True)


def test_native_kernels_refuse_read_only_outputs():
    """The kernels' own last line of defence: an output buffer that cannot be written is a
    ValueError from the binding (never a write through a read-only view)."""
    from pydl import _cpp, _cython

    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    out = np.zeros((3, 5), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out: must be writeable"):
        _cpp.gemm_matmul_f32(a, b, out)
    x = np.ones((1, 2, 5, 5), np.float32)
    y = np.zeros((1, 2, 5, 5), np.float32)
    y.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _cpp.elementwise_relu_f32(x, y)
    with pytest.raises(ValueError, match="writeable"):
        _cpp.conv_conv2d_f32(x, np.ones((2, 2, 1, 1), np.float32), None, y, 1, 1, 0, 0, 1, 1, 1, 0)
    cols = np.zeros((1, 2, 25), np.float32)
    cols.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _cython.conv_im2col(x, cols, (1, 1, 1, 1, 0, 0, 1, 1))
    assert out.sum() == 0 and y.sum() == 0 and cols.sum() == 0


# -- matmul's empty batch, handled by the cpp kernel itself ----------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpp_matmul_empty_batch_in_the_kernel(dtype):
    """Regression: the cpp kernel took a 2-D operand's batch of 1 over the other's empty batch
    (max of the two), expected a (1, M, N) output and refused the (0, M, N) one ("out: wrong
    shape"); the adapter guarded it in Python. Now the kernel sizes the batch from the batched
    operand, forward and backward, and writes the K = 0 zeros itself."""
    from pydl import _cpp

    sfx = "f32" if dtype == np.float32 else "f64"
    rng = np.random.default_rng(7)
    for sa, sb in (((0, 3, 4), (4, 5)), ((3, 4), (0, 4, 5)), ((0, 3, 4), (0, 4, 5)), ((2, 3, 0), (0, 5)),
                   ((3, 0), (2, 0, 5)), ((0, 4), (4, 5))):
        a, b = rng.standard_normal(sa).astype(dtype), rng.standard_normal(sb).astype(dtype)
        ref = np.matmul(a, b)
        new = getattr(_cpp, f"gemm_matmul_new_{sfx}")(a, b)
        assert new.shape == ref.shape and np.array_equal(new, ref), (sa, sb)
        out = np.full(ref.shape, np.nan, dtype)
        getattr(_cpp, f"gemm_matmul_{sfx}")(a, b, out)
        assert np.array_equal(out, ref), (sa, sb)
        g = rng.standard_normal(ref.shape).astype(dtype)
        da, db = np.full(sa, np.nan, dtype), np.full(sb, np.nan, dtype)
        getattr(_cpp, f"gemm_matmul_backward_{sfx}")(g, a, b, da, db, "", "")
        ref_a = np.matmul(g, np.swapaxes(b, -1, -2))
        ref_b = np.matmul(np.swapaxes(a, -1, -2), g)
        ref_a = ref_a if ref_a.shape == sa else ref_a.sum(axis=0)
        ref_b = ref_b if ref_b.shape == sb else ref_b.sum(axis=0)
        assert np.array_equal(da, ref_a) and np.array_equal(db, ref_b), (sa, sb)
        _agree("matmul", dict(a=a.astype(np.float64), b=b.astype(np.float64)))
