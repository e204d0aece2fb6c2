"""Print the OpInfo table of tests/test_opinfo.py: per PyTorch OpInfo sample set, how many
float32 samples pydl accepts and agrees on (every CPU backend, forward and backward), how
many it refuses and why, and any failure.

    .venv/bin/python dev/opinfo/report.py [OPINFO_NAME ...]
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests"))

import test_opinfo  # noqa: E402

if __name__ == "__main__":
    import pydl

    pydl.set_num_threads(1)  # tiny samples: see test_opinfo._one_thread
    _, fails = test_opinfo.report(sys.argv[1:] or None)
    sys.exit(1 if fails else 0)
