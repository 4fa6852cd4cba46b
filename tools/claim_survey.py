"""Do the book's claims hold on fresh draws of their seeds?

Another processor rounds differently, and a few hundred chaotic training
steps turn that into another draw of every seed's result, so a claim that
holds for seeds 0-2 on one machine can fail on the next. This runs
chapters with their seeds shifted (``NORMBOOK_SEED_OFFSET``) and the claims
in survey mode (``NORMBOOK_CLAIMS_SURVEY``: recorded, not raised), then
prints, for every claim, whether it held under each offset::

    .venv/bin/python tools/claim_survey.py ch08_which_axes ch09_frn_tlu \\
        --offsets 0 3 6 9

A claim about training runs that fails under some offset rests on lucky
draws: compare with a margin the seeds' spread supports, use more seeds,
or change the sentence. Each chapter runs once per offset, in turn (the
chapters are sized for the whole machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


def run_chapter(chapter: str, offset: int, workdir: Path) -> list[dict]:
    """The claims of one run of ``chapter`` with its seeds shifted by
    ``offset``, in order; a final record notes a crash, if any."""
    notebook = jupytext.read(BOOK / f"{chapter}.md")
    script = workdir / f"{chapter}_{offset}.py"
    jupytext.write(notebook, script, fmt="py:percent")
    log = workdir / f"{chapter}_{offset}.jsonl"
    log.unlink(missing_ok=True)
    env = dict(
        os.environ,
        KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax"),
        NORMBOOK_STATIC="1",
        MPLBACKEND="Agg",
        NORMBOOK_SEED_OFFSET=str(offset),
        NORMBOOK_CLAIMS_SURVEY=str(log),
        NORMBOOK_CLAIMS_DIR=str(workdir / "claims"),
    )
    ipython = Path(sys.executable).with_name("ipython")
    done = subprocess.run(
        [str(ipython), "--colors=NoColor", str(script)],
        cwd=BOOK,
        env=env,
        capture_output=True,
        text=True,
    )
    records = (
        [json.loads(line) for line in log.read_text().splitlines()]
        if log.exists()
        else []
    )
    if done.returncode != 0 or "Traceback" in done.stdout:
        # IPython prints the traceback to stdout; stderr holds the backends'
        # start-up logs, which say nothing about the crash.
        tail = (done.stdout.strip() or done.stderr.strip()).splitlines()[-3:]
        records.append(
            {
                "statement": "(the chapter crashed)",
                "evidence": " | ".join(tail),
                "holds": False,
            }
        )
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="+", help="e.g. ch08_which_axes")
    parser.add_argument("--offsets", nargs="+", type=int, default=[0, 3, 6])
    parser.add_argument("--out", type=Path, help="write the records as JSON")
    args = parser.parse_args()
    everything = {}
    failing = 0
    with tempfile.TemporaryDirectory() as tmp:
        for chapter in args.chapters:
            chapter = chapter.removesuffix(".md")
            runs = {k: run_chapter(chapter, k, Path(tmp)) for k in args.offsets}
            everything[chapter] = runs
            every = [r["statement"] for rs in runs.values() for r in rs]
            statements = list(dict.fromkeys(every))
            print(f"\n{chapter}  (offsets {' '.join(map(str, args.offsets))})")
            for statement in statements:
                marks = []
                for k in args.offsets:
                    held = [
                        r["holds"]
                        for r in runs[k]
                        if r["statement"] == statement
                    ]
                    mark = "ok" if all(held) else "NO"
                    marks.append(mark if held else ".")
                failing += "NO" in marks
                print(f"  {' '.join(f'{m:>2s}' for m in marks)}  {statement}")
                for k in args.offsets:
                    for r in runs[k]:
                        if r["statement"] == statement and not r["holds"]:
                            print(f"        offset {k}: {r['evidence']}")
            sys.stdout.flush()
    if args.out:
        text = json.dumps(everything, ensure_ascii=False, indent=1)
        args.out.write_text(text)
    print(f"\n{failing} claim(s) failed under some offset")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
