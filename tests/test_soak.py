"""The short memory soak (tests/soak.py; ``make soak`` is the long one): every op with a
native kernel, forward and backward on random cases and dtypes across its native backends,
after a warm-up; resident memory must stay flat."""
import soak


def test_soak_short():
    r = soak.soak(iters=40, seed=1, max_cases=4)
    assert r["steps"] == 40 * r["ops"]
    # a leak of one output-sized array per step would add megabytes; allocator noise is ~1 MB
    growth = r["end"] - r["start"]
    assert growth < max(0.05 * r["start"], 16 << 20), (
        f"RSS grew {growth / 2 ** 20:.1f} MiB ({100 * r['growth']:.1f}%) over {r['steps']} steps")
