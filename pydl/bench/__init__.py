"""``pydl bench``: machine peaks, the benchmark runner, and the report.

- :mod:`pydl.bench.peaks`    FMA peak, copy bandwidth (and GPU rates), cached per machine
- :mod:`pydl.bench.runner`   every op x backend x case, timed and checked
- :mod:`pydl.bench.report`   report.md, report.html (plots embedded), results.json; merging
- :mod:`pydl.bench.check`    ``pydl check``: the kernel developer's loop
"""
from .runner import RunResult, Settings, plan, run

__all__ = ["RunResult", "Settings", "plan", "run"]
