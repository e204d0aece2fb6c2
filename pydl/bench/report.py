"""The report: results.json (raw timings, peaks, environment, derived rows),
report.md and a self-contained report.html (inline CSS, PNGs as base64),
and the PNGs beside them. Several runs (this machine's and results.json
files of other machines, ``--merge``) become sections of one page."""
from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

from . import analysis, plots

SCHEMA = "pydl-bench/1"
FAMILY_ORDER = ("gemm", "conv", "pool", "elementwise", "norm", "loss", "sparse", "rnn", "attention")


def make_run(result, settings, peaks: dict, env: dict, wall_s: float) -> dict:
    from dataclasses import asdict

    run = {"environment": env, "peaks": peaks, "settings": asdict(settings), "wall_s": wall_s,
           "records": result.records, "errors": result.errors}
    run["rows"] = analysis.derive(run)
    return run


def load_runs(paths) -> list[dict]:
    """Every run in the given results.json files (each marked with its file)."""
    runs = []
    for p in paths:
        d = json.loads(Path(p).read_text())
        if d.get("schema") != SCHEMA:
            raise ValueError(f"--merge {p}: not a pydl bench results.json (schema {d.get('schema')!r}, "
                             f"expected {SCHEMA!r})")
        for r in d["runs"]:
            r = dict(r)
            r.setdefault("merged_from", str(p))
            r["rows"] = analysis.derive(r)  # recomputed: the figures follow the raw data
            runs.append(r)
    return runs


def _machine(run: dict) -> str:
    env = run["environment"]
    if run["settings"].get("device") == "cuda":
        g = (run.get("peaks") or {}).get("gpu") or {}
        return f"{g.get('name', 'GPU')} (host {env.get('cpu')})"
    return f"{env.get('cpu')}, {env.get('cpu_count')} CPUs"


def _slug(run: dict, i: int) -> str:
    return f"run{i}"


def _fmt(v, spec=".3g", none="-"):
    return none if v is None else format(v, spec)


def _ms(t):
    return f"{t * 1e3:.3g}"


def family_table(rows: list[dict], family: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one line per (op, case, backend), forward and forward+backward side by side."""
    rs = [r for r in rows if r["family"] == family]
    keys = list(dict.fromkeys((r["op"], r["case"], r["backend"]) for r in rs))
    # per op and case: pydl backends in their order (variants after their default), then the references
    order = {b: i for i, b in enumerate(("cuda", "cpp", "cython", "numba", "numpy", "torch"))}
    first = {k[:2]: i for i, k in reversed(list(enumerate(keys)))}
    keys.sort(key=lambda k: (first[k[:2]], order.get(k[2].split(":")[0], 9), k[2]))
    by = {(r["op"], r["case"], r["backend"], r["mode"]): r for r in rs}
    head = ["op", "case", "backend", "fwd ms (IQR)", "fwd rate", "% peak", "x numpy", "x torch",
            "fwd+bwd ms", "x numpy", "x torch", "check"]
    out = []
    for op, case, b in keys:
        f = by.get((op, case, b, "forward"))
        fb = by.get((op, case, b, "forward+backward"))
        rate = "-"
        if f and f.get("bound") == "compute":
            rate = f"{f['gflops']:.3g} GFLOP/s"
        elif f and f.get("gbps") is not None:
            rate = f"{f['gbps']:.3g} GB/s"
        checks = {r["check"] for r in (f, fb) if r}
        noted = any(r.get("check_note") for r in (f, fb) if r)
        src = (f or fb)["source"]
        out.append([
            op, case + (" (conformance case)" if src == "conformance" else ""), b,
            f"{_ms(f['median_s'])} ({_ms(f['iqr_s'])})" if f else "-",
            rate,
            _fmt(f and f.get("pct_peak"), ".1f") + (f" {f['bound'][:3]}" if f and f.get("bound") else ""),
            _fmt(f and f.get("x_numpy"), ".2f"), _fmt(f and f.get("x_torch"), ".2f"),
            _ms(fb["median_s"]) if fb else "-",
            _fmt(fb and fb.get("x_numpy"), ".2f"), _fmt(fb and fb.get("x_torch"), ".2f"),
            "MISMATCH" if "mismatch" in checks else ("ok*" if noted else "ok"),
        ])
    return head, out


def _families(rows):
    fams = list(dict.fromkeys(r["family"] for r in rows))
    return sorted(fams, key=lambda f: (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else 99, f))


def _peak_lines(run: dict) -> list[str]:
    p = run.get("peaks") or {}
    c = p.get("cpu") or {}
    lines = []
    if c:
        fma = ", ".join(f"{k}: {v:.0f}" for k, v in (c.get("fma_gflops") or {}).items())
        lines.append(f"CPU FP32 FMA peak (GFLOP/s): {fma or c.get('fma_error', 'not measured')}")
        lines.append(f"CPU copy bandwidth (np.copyto 256 MiB, read+write): {c.get('copy_gbps', 0):.1f} GB/s")
        if c.get("read_gbps"):
            lines.append(f"CPU read bandwidth (streaming sum of 256 MiB, {c.get('threads')} threads): "
                         f"{c['read_gbps']:.1f} GB/s (the roof of read-only kernels such as a GEMV)")
    if p.get("loadavg") and p["loadavg"][0] > (run["environment"].get("cpu_count") or 1):
        lines.append(f"WARNING: peaks measured at load average {p['loadavg'][0]} on "
                     f"{run['environment'].get('cpu_count')} CPUs ({p.get('measured_at')}): other processes shared "
                     f"the cores, so the peaks and % of peak are unreliable; rerun with --refresh-peaks when quiet")
    g = p.get("gpu")
    if g:
        rates = ", ".join(f"{k}: {v / 1e3:.1f} TFLOP/s" for k, v in (g.get("gemm_gflops") or {}).items())
        lines.append(f"GPU {g.get('name')}: copy {g.get('copy_gbps', 0):.0f} GB/s; cuBLAS GEMM "
                     f"{g.get('gemm_n')}^3 {rates}")
    return lines


def _env_lines(run: dict) -> list[str]:
    e = run["environment"]
    b = e.get("cpp_build") or {}
    feats = " ".join(k for k, v in (e.get("cpu_features") or {}).items() if v)
    th = e.get("threads") or {}
    return [
        f"CPU: {e.get('cpu')} ({e.get('cpu_count')} CPUs), features: {feats}",
        f"pydl {e.get('pydl')} at {e.get('git_commit')}, {b.get('kind', 'native')} build, module "
        f"{b.get('module', 'pydl._cpp')} (-march={b.get('arch')}, {((e.get('native') or {}).get('cpp') or {}).get('why', '')}) "
        f"SIMD in use {b.get('simd_in_use')}; Python {e.get('python')}, NumPy {e.get('numpy')} ({e.get('numpy_blas')}), "
        f"Numba {e.get('numba')}, PyTorch {e.get('torch')}",
        "threads: " + ", ".join(f"{k}={v}" for k, v in th.items() if v is not None)
        + f"; OMP_WAIT_POLICY of the timing processes: {e.get('omp_wait_policy_workers', 'inherit')}",
        f"load average at start: {e.get('loadavg')}"
        + (" (BUSY machine: other processes shared the cores; compare ratios, not absolute times)"
           if e.get("loadavg") and e["loadavg"][0] > (e.get("cpu_count") or 1) else "")
        + f"; run: {run['settings'].get('device')}, "
        f"{'quick' if run['settings'].get('quick') else 'full'}, budget {run['settings'].get('budget')} s/job, "
        f"wall {run.get('wall_s', 0):.0f} s" + (f"; merged from {run['merged_from']}" if run.get("merged_from") else ""),
    ]


METHOD = (
    "Each job: inputs bound once and copied enough times to exceed twice the last-level cache "
    "(rotated between calls); warm-up calls (JIT compiles) outside the clock; timed calls until the "
    "time budget; median and interquartile range; then a fresh call (outputs poisoned) checked against the "
    "float64 NumPy reference with the op's float32 tolerances, or, where a long reduction at benchmark size "
    "exceeds them, within 2x the error of the NumPy reference itself run in float32 (marked ok*, with both "
    "errors listed). Each runtime (numpy, cpp, cython, numba, torch) runs in its own process so no other "
    "runtime's idle threads spin on the cores. Rates and % of peak are for the "
    "forward (the specs count forward flops and the fewest bytes it must move); % of peak is against the "
    "compute roof when flops/byte is above the ridge point, else against copy bandwidth ('com'/'mem'). "
    "x numpy / x torch = reference time / this time, same case and mode (higher is faster). "
    "'torch' is PyTorch CPU running the same op through the spec's torch oracle, on float32."
)


def _figures(run: dict) -> dict[str, bytes]:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        import sys

        print("pydl bench: matplotlib is missing, the report has no plots (pip install 'pydl[bench]')",
              file=sys.stderr)
        return {}
    rows = run["rows"]
    figs = {}
    for fam in _families(rows):
        png = plots.speedup_bars(rows, fam)
        if png:
            figs[f"speedup-{fam}"] = png
    roof = analysis.roofs(run.get("peaks"), run["settings"].get("device", "cpu"))
    c = (run.get("peaks") or {}).get("cpu") or {}
    extra = {k: v for k, v in (c.get("fma_gflops") or {}).items()
             if run["settings"].get("device", "cpu") == "cpu" and abs(v - (roof["gflops"] or 0)) > 1e-9}
    png = plots.roofline(rows, roof, extra, title=f"roofline: {_machine(run)}")
    if png:
        figs["roofline"] = png
    png = plots.gemm_vs_size(rows)
    if png:
        figs["gemm-size"] = png
    return figs


def write(runs: list[dict], out_dir) -> dict[str, Path]:
    """Write results.json, report.md, report.html and the PNGs; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    created = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (out / "results.json").write_text(json.dumps({"schema": SCHEMA, "created": created, "runs": runs}, indent=1))
    md = [f"# pydl benchmark report\n", f"Created {created}. Raw timings, peaks and environment: "
          f"[results.json](results.json) (`runs[i].records`; the tables are `runs[i].rows`).\n",
          f"_Method._ {METHOD}\n"]
    body = []
    for i, run in enumerate(runs):
        slug = _slug(run, i)
        figs = _figures(run)
        for name, png in figs.items():
            (out / f"{slug}-{name}.png").write_bytes(png)
        md.append(f"## {_machine(run)}\n")
        md += [f"- {line}" for line in _peak_lines(run) + _env_lines(run)] + [""]
        sec = [f"<h2 id='{slug}'>{html.escape(_machine(run))}</h2><ul>"
               + "".join(f"<li>{html.escape(l)}</li>" for l in _peak_lines(run) + _env_lines(run)) + "</ul>"]
        fails = [r for r in run["records"] if r["check"] == "mismatch"] + list(run.get("errors") or [])
        if fails:
            items = [f"{f['op']} on {f['backend']} ({f['mode']}): "
                     + (f.get("error") or f.get("check_detail", "").splitlines()[0]) for f in fails]
            md.append("**FAILURES (wrong results or errors):**\n" + "\n".join(f"- {x}" for x in items) + "\n")
            sec.append("<div class='fail'><b>FAILURES (wrong results or errors)</b><ul>"
                       + "".join(f"<li>{html.escape(x)}</li>" for x in items) + "</ul></div>")
        for key, caption in (("roofline", "Roofline"), ("gemm-size", "GEMM rate against size")):
            if key in figs:
                md.append(f"### {caption}\n\n![{caption}]({slug}-{key}.png)\n")
                sec.append(f"<h3>{caption}</h3>" + _img(figs[key], caption))
        for fam in _families(run["rows"]):
            head, rows = family_table(run["rows"], fam)
            md.append(f"### {fam}\n")
            md.append("| " + " | ".join(head) + " |")
            md.append("|" + "|".join("---" if j < 3 or j == len(head) - 1 else "---:" for j in range(len(head))) + "|")
            md += ["| " + " | ".join(r) + " |" for r in rows]
            md.append("")
            sec.append(f"<h3>{html.escape(fam)}</h3>" + _html_table(head, rows))
            notes = [f"{r['op']} {r['backend']} {r['mode']}: {r['check_note']}" for r in run["rows"]
                     if r["family"] == fam and r.get("check_note")]
            if notes:
                md += [f"ok* {n}" + "  " for n in notes] + [""]
                sec.append("<ul class='notes'>" + "".join(f"<li>ok* {html.escape(n)}</li>" for n in notes) + "</ul>")
            if f"speedup-{fam}" in figs:
                md.append(f"![{fam} speedup]({slug}-speedup-{fam}.png)\n")
                sec.append(_img(figs[f"speedup-{fam}"], f"{fam} speedup"))
        if run.get("train"):  # the train family: whole training steps against torch
            from . import train_step

            md += train_step.markdown(run["train"])
            sec.append(train_step.html(run["train"]))
        if run.get("neighbours"):  # pydl in one process beside NumPy and PyTorch
            from . import neighbours

            md += neighbours.markdown(run["neighbours"])
            sec.append(neighbours.html(run["neighbours"]))
        body.append("\n".join(sec))
    (out / "report.md").write_text("\n".join(md) + "\n")
    toc = "".join(f"<li><a href='#{_slug(r, i)}'>{html.escape(_machine(r))}</a></li>" for i, r in enumerate(runs))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>pydl benchmark report</title>"
            f"<style>{CSS}</style></head><body><h1>pydl benchmark report</h1><p class='meta'>Created "
            f"{html.escape(created)}. Every figure comes from <code>results.json</code> beside this page.</p>"
            f"<p class='method'><b>Method.</b> {html.escape(METHOD)}</p><ul class='toc'>{toc}</ul>"
            + "\n".join(body) + "</body></html>")
    (out / "report.html").write_text(page)
    return {"dir": out, "html": out / "report.html", "md": out / "report.md", "json": out / "results.json"}


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _html_table(head, rows) -> str:
    h = "".join(f"<th>{html.escape(x)}</th>" for x in head)
    trs = []
    for r in rows:
        cls = " class='bad'" if r[-1] == "MISMATCH" else (" class='ref'" if r[2] in ("numpy", "torch") else "")
        trs.append(f"<tr{cls}>" + "".join(
            f"<td{' class=num' if 3 <= j < len(r) - 1 else ''}>{html.escape(x)}</td>" for j, x in enumerate(r)) + "</tr>")
    return f"<table><thead><tr>{h}</tr></thead><tbody>{''.join(trs)}</tbody></table>"


CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1300px;
color:#222;line-height:1.4;padding:0 16px}
h1{font-size:26px;margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
h3{margin-top:26px;font-size:17px}.meta{color:#666}.method{background:#f6f8fa;padding:10px 14px;border-radius:6px;
font-size:13px}ul{font-size:13px}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0 12px;width:100%}
th{background:#24292f;color:#fff;padding:5px 8px;text-align:left;position:sticky;top:0}
td{padding:4px 8px;border-bottom:1px solid #e3e3e3;white-space:nowrap}td.num{text-align:right;
font-variant-numeric:tabular-nums}tr:nth-child(even){background:#fafafa}tr.ref td{color:#555;font-style:italic}
tr.bad td{background:#ffe0e0;color:#a00;font-weight:bold}.fail{background:#ffe0e0;border:1px solid #e99;
padding:8px 14px;border-radius:6px;color:#a00}img{max-width:100%;display:block;margin:8px 0}
code{background:#f0f0f0;padding:1px 4px;border-radius:3px}.notes{color:#666;font-size:12px}
"""
