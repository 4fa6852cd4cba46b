"""Prints how long each chapter took to execute, from the jupyter-cache
records of the last `make book` (budget: 90 s per chapter on 2 cores).
`make book` runs two chapters at a time (tools/execute_chapters.py), so a
chapter's time here is measured while it shares the machine with another."""

import sys
from pathlib import Path

from jupyter_cache import get_cache

path = sys.argv[1] if len(sys.argv) > 1 else "_build/.jupyter_cache"
cache = get_cache(Path(path))
for record in sorted(cache.list_cache_records(), key=lambda r: r.uri):
    seconds = record.data.get("execution_seconds")
    name = Path(record.uri).name
    print(f"{name:40s} {seconds:6.1f} s" if seconds else f"{name:40s}   n/a")
