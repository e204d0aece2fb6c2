"""Derived figures: rates, roofs, % of peak and speedups, all computed from
the raw records and peaks of one run (so every number in the report can be
recomputed from results.json)."""
from __future__ import annotations

from collections import defaultdict

REFERENCES = ("numpy", "torch")


def roofs(peaks: dict, device: str) -> dict:
    """{'gflops', 'gbps', 'label'} the roofline of this run's device."""
    if device == "cuda":
        g = (peaks or {}).get("gpu") or {}
        return {"gflops": (g.get("gemm_gflops") or {}).get("fp32"), "gbps": g.get("copy_gbps"),
                "label": f"{g.get('name', 'GPU')}: cuBLAS fp32 GEMM, device copy"}
    c = (peaks or {}).get("cpu") or {}
    simd = c.get("fma_best_simd", "?")
    return {"gflops": c.get("compute_gflops"), "gbps": c.get("copy_gbps"),
            "label": f"FMA {simd} x {c.get('threads')} threads, np.copyto bandwidth"}


def derive(run: dict) -> list[dict]:
    """One row per record with: gflops, gbps, intensity, bound, roof, pct_peak,
    speedup over each reference (same op, case and mode)."""
    recs = run["records"]
    base = defaultdict(dict)
    for r in recs:
        if r["backend"] in REFERENCES:
            base[(r["op"], r["case"], r["mode"])][r["backend"]] = r["median_s"]
    rows = []
    for r in recs:
        roof = roofs(run.get("peaks"), r.get("device", "cpu"))
        t = r["median_s"]
        row = {k: r[k] for k in ("op", "family", "case", "source", "backend", "mode", "device",
                                 "median_s", "iqr_s", "repeats", "check")}
        row["check_note"] = r.get("check_detail", "") if r["check"] == "ok" else ""
        row["intensity"] = r["flops"] / r["bytes"] if r["bytes"] else None
        fwd = r["mode"] == "forward"
        # rates only for the forward: the specs count forward flops and bytes
        row["gflops"] = r["flops"] / t / 1e9 if fwd and t > 0 else None
        row["gbps"] = r["bytes"] / t / 1e9 if fwd and t > 0 else None
        row["bound"] = row["roof_gflops"] = row["pct_peak"] = None
        if fwd and roof["gflops"] and roof["gbps"] and row["intensity"] is not None:
            ridge = roof["gflops"] / roof["gbps"]
            row["bound"] = "compute" if row["intensity"] >= ridge else "memory"
            row["roof_gflops"] = min(roof["gflops"], row["intensity"] * roof["gbps"])
            if row["bound"] == "memory":
                row["pct_peak"] = 100 * row["gbps"] / roof["gbps"]
            else:
                row["pct_peak"] = 100 * row["gflops"] / roof["gflops"]
        for ref in REFERENCES:
            tb = base[(r["op"], r["case"], r["mode"])].get(ref)
            row[f"x_{ref}"] = tb / t if tb and t > 0 else None
        rows.append(row)
    return rows
