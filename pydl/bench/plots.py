"""The report's figures (matplotlib, Agg, PNG bytes). Each takes the derived
rows of one run (analysis.derive) and its roofs; nothing else."""
from __future__ import annotations

import io
from collections import defaultdict

COLORS = {"cpp": "#1f77b4", "cython": "#ff7f0e", "numba": "#2ca02c", "cuda": "#9467bd",
          "numpy": "#7f7f7f", "torch": "#d62728"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _color(backend: str) -> str:
    return COLORS.get(backend.split(":")[0], "#8c564b")


def speedup_bars(rows: list[dict], family: str, ref: str = "numpy") -> bytes | None:
    """Forward speedup over ``ref`` per op (and case), one bar per backend; log scale."""
    rs = [r for r in rows if r["family"] == family and r["mode"] == "forward"
          and r["backend"] != ref and r.get(f"x_{ref}")]
    if not rs:
        return None
    plt = _plt()
    keys = list(dict.fromkeys((r["op"], r["case"]) for r in rs))
    backends = list(dict.fromkeys(r["backend"] for r in rs))
    val = {(r["op"], r["case"], r["backend"]): r[f"x_{ref}"] for r in rs}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(keys) * max(1, len(backends)) / 3 + 2), 3.6))
    w = 0.8 / len(backends)
    for j, b in enumerate(backends):
        xs = [i + (j - (len(backends) - 1) / 2) * w for i in range(len(keys))]
        ys = [val.get((o, c, b), 0) for o, c in keys]
        ax.bar(xs, ys, w, label=b, color=_color(b), alpha=0.5 if ":" in b else 1.0)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(keys)))
    multi = len({o for o, _ in keys}) < len(keys)
    ax.set_xticklabels([f"{o}\n{c}" if multi else o for o, c in keys], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"speedup over {ref} (forward)")
    ax.set_title(f"{family}: forward time of {ref} / time of backend (higher is faster)", fontsize=10)
    ax.legend(fontsize=8, ncol=min(len(backends), 6))
    ax.grid(axis="y", which="both", alpha=0.3)
    return _png(fig)


def roofline(rows: list[dict], roof: dict, extra_roofs: dict | None = None, title: str = "") -> bytes | None:
    """Every forward kernel at (flops/byte, GFLOP/s) under the measured roofs."""
    import numpy as np

    rs = [r for r in rows if r["mode"] == "forward" and r.get("gflops") and r.get("intensity")]
    if not rs or not roof.get("gflops") or not roof.get("gbps"):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    lo = min(min(r["intensity"] for r in rs) / 2, 0.05)
    hi = max(max(r["intensity"] for r in rs) * 2, 4 * roof["gflops"] / roof["gbps"])
    x = np.logspace(np.log10(lo), np.log10(hi), 200)
    ax.plot(x, np.minimum(roof["gflops"], x * roof["gbps"]), color="black", lw=2,
            label=f"roof: {roof['gflops']:.0f} GFLOP/s, {roof['gbps']:.1f} GB/s")
    for name, g in (extra_roofs or {}).items():
        ax.plot(x, np.minimum(g, x * roof["gbps"]), color="gray", lw=1, ls="--")
        ax.text(hi, g, f" {name}", va="center", fontsize=7, color="gray")
    seen = set()
    for r in rs:
        b = r["backend"]
        ax.scatter(r["intensity"], r["gflops"], color=_color(b), s=22, zorder=3,
                   marker="o" if ":" not in b else "^", label=None if b in seen else b)
        seen.add(b)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (forward flops / fewest bytes moved)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(title or "roofline (forward)", fontsize=10)
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def gemm_vs_size(rows: list[dict]) -> bytes | None:
    """GEMM-family GFLOP/s against size (cube root of flops/2), one line per backend."""
    rs = [r for r in rows if r["family"] == "gemm" and r["mode"] == "forward" and r.get("gflops")]
    if not rs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    by = defaultdict(list)
    for r in rs:
        by[(r["op"], r["backend"])].append(((r["gflops"] * r["median_s"] * 1e9 / 2) ** (1 / 3), r["gflops"]))
    for (op, b), pts in sorted(by.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=_color(b),
                ls="-" if op == "matmul" else ":", label=f"{op} {b}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("size (cube root of M*N*K)")
    ax.set_ylabel("GFLOP/s (forward)")
    ax.set_title("GEMM rate against size", fontsize=10)
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
