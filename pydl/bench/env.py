"""The environment a benchmark ran in: CPU, SIMD, threads, versions, git commit.
The machine itself (CPU, features, caches, native path) comes from :mod:`pydl.machine`."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


def git_commit() -> str | None:
    """The commit of the pydl checkout (with "+dirty" when it has edits), if any."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def thread_settings() -> dict:
    """Every thread knob that changes a timing."""
    from pydl import backends

    out = {"pydl": backends.get_num_threads()}
    for var in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_PROC_BIND",
                "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        out[var] = os.environ.get(var)
    try:
        import numba

        out["numba"] = numba.get_num_threads()
    except Exception:
        pass
    if "torch" in sys.modules:
        out["torch"] = sys.modules["torch"].get_num_threads()
    return out


def environment() -> dict:
    """``pydl info`` plus the thread settings, the git commit and the command line."""
    from pydl.machine import info

    d = info()
    d["threads"] = thread_settings()
    d["git_commit"] = git_commit()
    d["argv"] = sys.argv[1:]
    d["hostname"] = platform.node()
    try:
        import numpy as np

        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        d["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        d["numpy_blas"] = None
    try:
        import torch

        d["torch"] = torch.__version__
    except Exception:
        d["torch"] = None
    return d
