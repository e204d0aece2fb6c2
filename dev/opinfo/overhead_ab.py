"""A/B timing of the dispatch path issue 17 touched, in one process, rounds alternating
(CPU time of the process; a loaded machine still shifts absolute figures, the
difference is what counts):

- A: ``relu`` as before (normalizer without ``inplace``, ``OpSpec.call`` and
  ``call_backward`` without the :class:`~pydl.registry.Viewed` checks);
  ``matmul``'s 2-D/3-D-only normalizer; (cpp ``linear`` as it is: its reshape(-1, n) kept, n = 0 apart);
- B: the code as it is.

    .venv/bin/python dev/opinfo/overhead_ab.py [--rounds 40]
"""
import argparse
import time
import timeit

import numpy as np

import pydl
from pydl import registry
from pydl.ops import _checks as ck


def old_relu(x):
    return dict(x=ck.array("x", x))


def old_matmul(a, b):
    a = ck.array("a", a, ndim=(2, 3), layout="(M, K) or (B, M, K)")
    b = ck.array("b", b, ndim=(2, 3), layout="(K, N) or (B, K, N)")
    ck.same_dtype(a=a, b=b)
    if a.shape[-1] != b.shape[-2]:
        raise ValueError("b: inner dimension")
    if a.ndim == 3 and b.ndim == 3 and a.shape[0] != b.shape[0]:
        raise ValueError("b: batch dimension")
    return dict(a=a, b=b)


def old_call(self, a, backend=None):
    _, impl = registry.select(self.name, a, backend)
    res = impl(**a)
    out, saved = res if self.saves else (res, None)
    return registry._arrays(out), saved


def old_call_backward(self, grad, a, saved=None, backend=None, needs=None, checked=True):
    if checked:
        grad = registry._check_grad(self, grad, a)
        _, impl = registry.select(self.name + "_backward", a, backend, extra=grad)
    else:
        _, impl = registry.select(self.name + "_backward", a, backend)
    if needs is not None and getattr(impl, "_pydl_takes_needs", False):
        res = registry._arrays(impl(grad, saved=saved, needs=tuple(needs), **a))
    else:
        res = registry._arrays(impl(grad, saved=saved, **a))
    if not isinstance(res, tuple) or len(res) != len(self.differentiable):
        raise RuntimeError(f"{self.name}_backward returned {type(res).__name__}")
    return res


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--number", type=int, default=3000)
    args = p.parse_args()
    pydl.set_num_threads(1)
    from pydl.backends.cpp import gemm as cpp_gemm

    relu, mm = registry.SPECS["relu"], registry.SPECS["matmul"]
    x = np.ones(8, np.float32)
    g = np.ones(8, np.float32)
    m = np.ones((4, 4), np.float32)
    w, bias, xl = np.ones((16, 16), np.float32), np.ones(16, np.float32), np.ones((2, 16), np.float32)
    gl = np.ones((2, 16), np.float32)
    new = (relu.normalize, mm.normalize, registry.OpSpec.call, registry.OpSpec.call_backward, cpp_gemm._empty_rows)
    old = (old_relu, old_matmul, old_call, old_call_backward, cpp_gemm._empty_rows)

    def use(fns):
        relu.normalize, mm.normalize, registry.OpSpec.call, registry.OpSpec.call_backward, cpp_gemm._empty_rows = fns

    cases = {
        "relu fwd (8 floats)": lambda: pydl.ops.relu(x, backend="cpp"),
        "relu bwd (8 floats)": lambda: pydl.ops.relu_backward(g, x, backend="cpp"),
        "matmul fwd (4x4 @ 4x4)": lambda: pydl.ops.matmul(m, m, backend="cpp"),
        "linear fwd (2x16 @ 16x16 + b)": lambda: pydl.ops.linear(xl, w, bias, backend="cpp"),
        "linear bwd (2x16 @ 16x16 + b)": lambda: pydl.ops.linear_backward(gl, xl, w, bias, backend="cpp"),
    }
    best = {(t, c): 1e9 for t in "AB" for c in cases}
    for _ in range(args.rounds):
        for tag, fns in (("A", old), ("B", new)):
            use(fns)
            for what, f in cases.items():
                # CPU time of this process: on a loaded machine the waits for a core stay out
                t = timeit.timeit(f, number=args.number, timer=time.process_time) / args.number
                best[tag, what] = min(best[tag, what], t)
    use(new)
    for what in cases:
        a, b = best["A", what] * 1e6, best["B", what] * 1e6
        print(f"{what:32s} cpp, best of {args.rounds} rounds: before {a:6.3f} us, after {b:6.3f} us, "
              f"difference {b - a:+.3f} us")

if __name__ == "__main__":
    main()
