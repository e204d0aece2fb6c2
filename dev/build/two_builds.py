"""Two builds of pydl's C++ module in one process, for A/B probes (dev/conv/ab.py,
dev/elementwise/ab.py): this checkout's pydl._cpp_<level> (A) and another build of the same level
loaded from a file (B), both held to `level` and `threads`.

The extension's PyInit_ name is its file's stem, so the other build is loaded under that name from
a copy in a temporary folder (its own path may carry any name)."""
import importlib
import importlib.util
import os
import shutil
import tempfile


def pair(other, level, threads=2):
    """(A, B): this checkout's module and the one built at path `other`."""
    path = os.path.join(tempfile.mkdtemp(), f"_cpp_{level}.so")
    shutil.copy(other, path)
    spec = importlib.util.spec_from_file_location(f"_cpp_{level}", path)
    b = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(b)
    a = importlib.import_module(f"pydl._cpp_{level}")
    for m in (a, b):
        m.set_simd_level(level)
        m.set_num_threads(threads)
    return a, b
