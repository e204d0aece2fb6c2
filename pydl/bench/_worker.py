"""Child-process entry of the runner: ``python -m pydl.bench._worker jobs.json``
(one per runtime; see pydl.bench.runner)."""
import sys

from pydl.bench.runner import _worker

if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
