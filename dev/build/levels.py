"""Every bench row at one SIMD level against another, on the same CPU: finds the kernels whose
lower-level path falls off (a loop GCC left scalar at x86-64-v3, a 64-bit multiply AVX2 lacks).

    pydl bench --quick --backends cpp,cython --no-variants --out /tmp/l512
    PYDL_SIMD=avx2 pydl bench --quick --backends cpp,cython --no-variants --out /tmp/l2
    python dev/build/levels.py /tmp/l512/results.json /tmp/l2/results.json [rows]

Prints, per backend, the rows sorted by median time at the second level over the first. On
Zen 5 (full-width 512-bit units) a vectorized kernel's AVX2 path runs at most ~2x its AVX-512
one (half the lanes, a few more instructions); far above that, the AVX2 path is not the one the
source meant (dev/build/README.md, "Every op at AVX2 against AVX-512").
"""
import json
import sys


def rows(path):
    data = json.load(open(path))
    return {(r["backend"], r["op"], r["case"], r["mode"]): r["median_s"] for r in data["runs"][0]["rows"]}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    first, second = rows(sys.argv[1]), rows(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 15
    for backend in sorted({k[0] for k in first}):
        ratios = sorted(((second[k] / first[k], k) for k in first if k[0] == backend and k in second), reverse=True)
        if not ratios:
            continue
        print(f"{backend}: time at the second level / the first (worst {min(top, len(ratios))} of {len(ratios)})")
        for r, (_, op, case, mode) in ratios[:top]:
            print(f"  {r:6.2f}  {op:32s} {case:30s} {mode:16s} {first[(backend, op, case, mode)] * 1e3:9.3f} -> "
                  f"{second[(backend, op, case, mode)] * 1e3:9.3f} ms")


if __name__ == "__main__":
    main()
