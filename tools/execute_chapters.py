"""Executes the book's chapters two at a time into the cache that
`jupyter-book build` reads, so the build itself executes nothing.

Jupyter Book executes the chapters one after another, each in its own
kernel, while a chapter's small training steps leave the second core mostly
idle. This runs them side by side with jupyter-cache's own execution worker
(the same one `jcache project execute --executor local-parallel` uses), over
a pool whose order we choose: the longest chapters first, from the last
build's timings, so that two workers finish together. A chapter that reads
the records of claims other chapters checked (it calls ``nb.checked``) runs
after all the others.

The cache is keyed on the chapters' code cells only, so a chapter whose
code did not change would keep outputs computed with an older library. The
cache is therefore also keyed here on everything a chapter's output
depends on besides its own cells: the sources of ``keraslayers`` and
``normbook``, the backend and the environment variables that change what
the chapters compute. When that key changes, the cache and the claim
records are cleared and every chapter runs again.

A chapter that fails is reported with its traceback and the script exits
with status 1 after the others have run, so `make book` stops before the
build and every failing chapter is listed at once.

Usage: python tools/execute_chapters.py [--jobs N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import yaml
from jupyter_cache import get_cache
from jupyter_cache.executors.basic import (
    ExecutionWorkerLocalMProc,
    ProcessData,
)

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
CACHE = BUILD / ".jupyter_cache"
CLAIMS = BUILD / "claims"
DOCTREES = BUILD / ".doctrees"
KEY_FILE = BUILD / ".chapters-key"
TIMES = BUILD / ".chapter-seconds.json"
STDERR_LOG = BUILD / "chapters-stderr.log"
# myst-nb registers its MyST reader with jupyter-cache under this name; it
# yields the same code cells (hence the same cache key) as the build reads.
READ_DATA = {"name": "myst_nb_md", "type": "plugin"}
# Environment variables that change what a chapter computes or checks.
# Seconds a cell may run, as `execute: timeout` in _config.yml.
TIMEOUT = yaml.safe_load((ROOT / "_config.yml").read_text())["execute"][
    "timeout"
]
ENVIRONMENT = (
    "KERAS_BACKEND",
    "NORMBOOK_STATIC",
    "NORMBOOK_SEED_OFFSET",
    "XLA_FLAGS",
)


def toc_chapters() -> list[Path]:
    """The notebook chapters of _toc.yml, in reading order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):  # a chapter, then its pages (sections)
        for entry in entries or []:
            files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    paths = [ROOT / f"{name}.md" for name in files]
    # A MyST notebook declares its kernel in its front matter.
    return [p for p in paths if "\nkernelspec:" in p.read_text()[:1000]]


def inputs_key(root: Path = ROOT) -> str:
    """A hash of what the chapters' outputs depend on besides their cells:
    keraslayers, normbook, the chapters' data files, the environment."""
    digest = hashlib.sha256()
    for folder in ("keraslayers", "book/normbook"):
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    # Data files the chapters read (ch15's decision table).
    for path in sorted((root / "book").glob("*.yaml")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    for name in ENVIRONMENT:
        digest.update(f"{name}={os.environ.get(name, '')}\n".encode())
    return digest.hexdigest()


def _quiet_kernels(log: str) -> None:
    """Pool initializer: the kernels a worker starts inherit its stderr,
    where the backends log their start-up; keep that in a file. A failing
    cell's traceback comes back through the kernel's messages, not stderr."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    key = inputs_key()
    stale = not KEY_FILE.is_file() or KEY_FILE.read_text() != key
    # The chapter that quotes earlier claims needs their records: a cache
    # without them (a `make clean` of claims only) is stale too.
    if stale or not CLAIMS.is_dir():
        if CACHE.exists() or CLAIMS.exists():
            print("chapters: the library, normbook or the environment changed;")
            print("          every chapter runs again")
        shutil.rmtree(CACHE, ignore_errors=True)
        shutil.rmtree(CLAIMS, ignore_errors=True)
    BUILD.mkdir(exist_ok=True)
    KEY_FILE.write_text(key)
    STDERR_LOG.unlink(missing_ok=True)

    # The kernels write the keyed claims' records here (normbook.claims);
    # a chapter run anywhere else writes none.
    os.environ["NORMBOOK_CLAIMS_DIR"] = str(CLAIMS)
    cache = get_cache(CACHE)
    # Kept apart from the cache, which a changed key clears.
    previous = json.loads(TIMES.read_text()) if TIMES.is_file() else {}
    waves: tuple[list, list] = ([], [])  # others, then the claim readers
    for path in toc_chapters():
        record = cache.add_nb_to_project(str(path), read_data=READ_DATA)
        reader = "nb.checked(" in path.read_text()
        cached = cache.get_cached_project_nb(record.pk)
        waves[reader].append((path, record, cached))
    # A chapter that runs again may check other claims: the readers quote
    # them, so they run again too.
    if any(cached is None for _, _, cached in waves[0]):
        for _, _, cached in waves[1]:
            if cached is not None:
                cache.remove_cache(cached.pk)
        waves = (waves[0], [(p, r, None) for p, r, _ in waves[1]])
    waves = tuple(
        # Longest first (a chapter not timed before counts as long), so
        # the workers finish together.
        sorted(
            [(p, r) for p, r, cached in wave if cached is None],
            key=lambda pr: -previous.get(pr[0].name, 1e9),
        )
        for wave in waves
    )
    if not any(waves):
        print("chapters: every chapter's outputs are cached")
        return 0

    # Sphinx re-reads only the pages whose source changed, and a chapter
    # run again has new outputs under an unchanged source: without its
    # saved environment, the build re-reads every page (from the cache).
    shutil.rmtree(DOCTREES, ignore_errors=True)
    worker = ExecutionWorkerLocalMProc()
    failed = []
    start = time.perf_counter()
    for chapters in waves:
        if not chapters:
            continue
        if failed:
            names = ", ".join(p.name for p, _ in chapters)
            print(f"chapters: not running {names}, which quote the others")
            break
        # `execute: timeout` bounds a cell that has the machine to itself;
        # here `jobs` chapters share it.
        timeout = TIMEOUT * args.jobs
        data = [
            ProcessData(r.pk, r.uri, cache, timeout, False) for _, r in chapters
        ]
        with multiprocessing.Pool(
            min(args.jobs, len(data)),
            initializer=_quiet_kernels,
            initargs=(str(STDERR_LOG),),
        ) as pool:
            for status, uri in pool.imap_unordered(worker, data, chunksize=1):
                name = Path(uri).name
                elapsed = time.perf_counter() - start
                print(
                    f"chapters: {name:36s} "
                    f"{'ok' if status == 0 else 'FAILED'} at {elapsed:5.0f} s",
                    flush=True,
                )
                if status != 0:
                    failed.append(uri)
    for record in cache.list_cache_records():
        seconds = record.data.get("execution_seconds")
        if seconds:
            previous[Path(record.uri).name] = round(seconds, 1)
    TIMES.write_text(json.dumps(previous, indent=1, sort_keys=True))
    for uri in failed:
        record = cache.get_project_record(uri)
        print(f"\n===== {Path(uri).name} failed =====", file=sys.stderr)
        print(record.traceback or "(no traceback recorded)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
