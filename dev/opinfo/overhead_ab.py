"""A/B timing of the dispatch path issue 17 touched, in one process, rounds alternating
(CPU time of the process; a loaded machine still shifts absolute figures, the
difference is what counts):

- A: ``relu`` as before (normalizer without ``inplace``, ``OpSpec.call`` and
  ``call_backward`` without the :class:`~pydl.registry.Viewed` checks);
- B: the code as it is.

    .venv/bin/python dev/opinfo/overhead_ab.py [--rounds 60]
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
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--number", type=int, default=5000)
    args = p.parse_args()
    pydl.set_num_threads(1)
    spec = registry.SPECS["relu"]
    x = np.ones(8, np.float32)
    g = np.ones(8, np.float32)
    new = (spec.normalize, registry.OpSpec.call, registry.OpSpec.call_backward)
    old = (old_relu, old_call, old_call_backward)

    def use(fns):
        spec.normalize, registry.OpSpec.call, registry.OpSpec.call_backward = fns

    fwd = lambda: pydl.ops.relu(x, backend="cpp")  # noqa: E731
    bwd = lambda: pydl.ops.relu_backward(g, x, backend="cpp")  # noqa: E731
    best = {("A", "fwd"): 1e9, ("B", "fwd"): 1e9, ("A", "bwd"): 1e9, ("B", "bwd"): 1e9}
    for _ in range(args.rounds):
        for tag, fns in (("A", old), ("B", new)):
            use(fns)
            for what, f in (("fwd", fwd), ("bwd", bwd)):
                # CPU time of this process: on a loaded machine the waits for a core stay out
                t = timeit.timeit(f, number=args.number, timer=time.process_time) / args.number
                best[tag, what] = min(best[tag, what], t)
    use(new)
    for what in ("fwd", "bwd"):
        a, b = best["A", what] * 1e6, best["B", what] * 1e6
        print(f"relu {what} (8 floats, cpp, best of {args.rounds} rounds): before {a:.3f} us, "
              f"after {b:.3f} us, difference {b - a:+.3f} us")


if __name__ == "__main__":
    main()
