"""Merges the per-backend benchmark files into results.json and writes a
readable table with the targets checked (results.md).

Usage: python -m benchmarks.report benchmarks/results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RUNS = {
    "tensorflow_xla": "TensorFlow + XLA",
    "tensorflow_noxla": "TensorFlow, no XLA",
    "jax": "JAX (jit)",
}


def load(folder: Path) -> dict:
    runs = {}
    for key in RUNS:
        path = folder / f"{key}.json"
        if path.exists():
            runs[key] = json.loads(path.read_text())
    if not runs:
        raise SystemExit(f"report: no benchmark files in {folder}")
    return runs


def _index(run):
    return {(r["group"], r["name"]): r for r in run["results"]}


def targets(runs: dict) -> list[dict]:
    """Each target as measured in each run: value, limit, met."""
    checks = []

    def add(run_key, target, value, limit):
        checks.append(
            {
                "run": run_key,
                "target": target,
                "value": value,
                "limit": limit,
                "met": value is not None and value <= limit,
            }
        )

    for key, run in runs.items():
        rows = _index(run)

        def ms(group, name, rows=rows):
            row = rows.get((group, name))
            return row["median_ms"] if row else None

        def ratio(a, b):
            return a / b if a is not None and b else None

        for shape in ("conv", "dense"):
            group = f"activation_{shape}"
            bn = ms(group, "keras_bn")
            for name in ("brn", "frn_tlu", "bkn"):
                add(
                    key,
                    f"{name} ≤ 1.1× Keras BN ({shape})",
                    ratio(ms(group, name), bn),
                    1.1,
                )
            add(
                key,
                f"frn_tlu ≤ Keras GN ({shape})",
                ratio(ms(group, "frn_tlu"), ms(group, "keras_gn")),
                1.0,
            )
        add(
            key,
            "IterNorm (T=5) ≤ 0.5× DBN at group 64",
            ratio(
                ms("whitening", "iternorm_g64_t5"), ms("whitening", "dbn_g64")
            ),
            0.5,
        )
        for kind in ("dense", "conv"):
            group = f"weight_{kind}_large"
            add(
                key,
                f"Orthogonal newton ≤ 1.3× plain ({kind}, large)",
                ratio(ms(group, "orth_newton"), ms(group, "plain")),
                1.3,
            )
            add(
                key,
                f"Orthogonal newton ≤ 0.5× eigh ({kind}, large)",
                ratio(ms(group, "orth_newton"), ms(group, "orth_eigh")),
                0.5,
            )
        for name in ("bn_folded", "orthogonal_exported"):
            add(
                key,
                f"{name} inference ≤ 1.02× plain",
                ratio(ms("inference", name), ms("inference", "plain")),
                1.02,
            )

    if "tensorflow_xla" in runs and "tensorflow_noxla" in runs:
        xla, noxla = (
            _index(runs["tensorflow_xla"]),
            _index(runs["tensorflow_noxla"]),
        )
        for shape in ("conv", "dense"):
            group = f"activation_{shape}"
            bn = (
                xla[(group, "keras_bn")]["median_ms"]
                / noxla[(group, "keras_bn")]["median_ms"]
            )
            for (g, name), row in xla.items():
                if g != group or name in ("keras_bn", "affine"):
                    continue
                own = row["median_ms"] / noxla[(g, name)]["median_ms"]
                checks.append(
                    {
                        "run": "tensorflow_xla/noxla",
                        "target": f"{name} XLA/no-XLA ≤ Keras BN's ({shape})",
                        "value": own,
                        "limit": bn,
                        "met": own <= bn,
                    }
                )
    return checks


def markdown(runs: dict, checks: list[dict]) -> str:
    lines = ["# Benchmark results", ""]
    for key, run in runs.items():
        m = run["machine"]
        lines.append(
            f"- **{RUNS[key]}**: {m['device']} ({m['processor']}, "
            f"{m['cpu_count']} cores), Keras {m['keras']}, "
            + ", ".join(f"{k} {m[k]}" for k in ("tensorflow", "jax") if k in m)
            + f", {m['date']}; {run['steps']} steps per compiled call, "
            f"{run['repeats']} interleaved rounds"
        )
    lines += [
        "",
        "Times are medians per training step (forward, backward, "
        "update), in ms; ratios are to the group's baseline in the "
        "same run.",
        "",
    ]
    groups = {}
    for key, run in runs.items():
        for row in run["results"]:
            groups.setdefault(row["group"], {}).setdefault(row["name"], {})[
                key
            ] = row
    for group, names in groups.items():
        baseline = next(iter(next(iter(names.values())).values()))["baseline"]
        shape = next(iter(next(iter(names.values())).values()))["input_shape"]
        lines += [f"## {group} (input {tuple(shape)}, baseline {baseline})", ""]
        header = (
            "| layer | "
            + " | ".join(f"{RUNS[k]} ms | ratio" for k in runs)
            + " |"
        )
        lines += [header, "|---" * (1 + 2 * len(runs)) + "|"]
        for name, per_run in names.items():
            cells = []
            for k in runs:
                row = per_run.get(k)
                if row is None:
                    cells += ["–", "–"]
                else:
                    cells += [
                        f"{row['median_ms']:.3f}",
                        f"{row['ratio']:.2f}" if row["ratio"] else "–",
                    ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Targets",
        "",
        "| run | target | measured | limit | met |",
        "|---|---|---|---|---|",
    ]
    for c in checks:
        value = "–" if c["value"] is None else f"{c['value']:.2f}"
        lines.append(
            f"| {c['run']} | {c['target']} | {value} | "
            f"{c['limit']:.2f} | {'yes' if c['met'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    folder = Path((argv or sys.argv[1:] or ["benchmarks/results"])[0])
    runs = load(folder)
    checks = targets(runs)
    (folder / "results.json").write_text(
        json.dumps({"runs": runs, "targets": checks}, indent=1)
    )
    (folder / "results.md").write_text(markdown(runs, checks))
    met = sum(c["met"] for c in checks)
    print(
        f"report: {met}/{len(checks)} targets met; wrote "
        f"{folder / 'results.json'} and {folder / 'results.md'}"
    )


if __name__ == "__main__":
    main()
