"""embedding on the native backends beyond the registry's conformance cases (at most 40 indices):
a language model's batch of tokens, big enough for the threaded paths, embedding dims that end in
a partial cache line, many repeats per row, padding_idx, 1 and 2 threads; the native entry
points' own checks.

The float32 weight gradient must equal the NumPy backend's bit for bit (both add a row's
upstream rows in the order of the indices, whatever the thread count); every result is also
checked against the float64 reference, outputs poisoned first.
"""
import numpy as np
import pytest

from pydl import registry
from pydl.testing import assert_close, copy_args, run_backward, run_forward

SPEC = registry.SPECS["embedding"]
NATIVE = [b for b in ("cpp",) if b in SPEC.implementations()]


def _args(n_tokens, num, dim, dtype, seed, padding_idx=None, index_dtype=np.int64):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num, (n_tokens // 64, 64)).astype(index_dtype)
    return dict(input=idx, weight=rng.standard_normal((num, dim)).astype(dtype), padding_idx=padding_idx)


@pytest.mark.parametrize("backend", NATIVE)
@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("case", [(2048, 96, 64, None, np.int64),     # the LSTM LM's batch: ~21 repeats a row
                                  (4096, 1000, 70, 3, np.int32),      # a partial last line, padding
                                  (640, 7, 33, -1, np.uint8)],        # ~90 repeats a row, padding the last
                         ids=["lm_batch", "dim70_pad", "few_rows"])
def test_embedding_threaded(backend, dtype, case, threads):
    n, num, dim, pad, idt = case
    args = _args(n, num, dim, dtype, seed=n + dim, padding_idx=pad, index_dtype=idt)
    rng = np.random.default_rng(1)
    out = run_forward(SPEC, args, backend)
    np.testing.assert_array_equal(out, args["weight"][args["input"].astype(np.intp)])
    grad = rng.standard_normal(out.shape).astype(dtype)
    (got,) = run_backward(SPEC, grad, args, backend)
    (gref,) = SPEC.backward(grad.astype(np.float64), **copy_args(args, np.float64), backend="numpy")
    rtol, atol = SPEC.tolerance(dtype, args, grad=True)
    assert_close(f"embedding/{backend} dweight", got, gref, rtol, atol)
    (same,) = SPEC.backward(grad, **args, backend="numpy")
    np.testing.assert_array_equal(got, same)  # the reference's order of sums, at any thread count
    if pad is not None:
        assert not got[pad % num].any()


@pytest.mark.skipif("cpp" not in NATIVE, reason="cpp backend not built")
def test_cpp_entry_points_throw():
    """The native checks raise (never abort, never read outside the table) on what the op would refuse."""
    from pydl import _cpp

    w = np.ones((5, 3), np.float32)
    out = np.empty((2, 3), np.float32)
    with pytest.raises(ValueError, match="input: index 5"):
        _cpp.embedding_f32(np.array([0, 5]), w, out)
    with pytest.raises(ValueError, match="input: index -1"):
        _cpp.embedding_backward_f32(np.array([-1, 0]), out, -1, np.empty_like(w))
    with pytest.raises(ValueError, match="padding_idx"):
        _cpp.embedding_backward_f32(np.array([1, 0]), out, 5, np.empty_like(w))
    with pytest.raises(ValueError, match="out"):
        _cpp.embedding_f32(np.array([0, 1, 2]), w, out)
    with pytest.raises(ValueError, match="weight"):
        _cpp.embedding_f32(np.array([0, 1]), w[0], out)
    with pytest.raises(TypeError):
        _cpp.embedding_f32(np.array([0, 1], np.int32), w, out)
