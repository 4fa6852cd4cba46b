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
                "met": value is not None
                and limit is not None
                and value <= limit,
            }
        )

    for key, run in runs.items():
        rows = _index(run)

        def ms(group, name, rows=rows):
            row = rows.get((group, name))
            return row["median_ms"] if row else None

        def ratio(a, b):
            return a / b if a is not None and b else None

        def in_group(group, name, limit, target, rows=rows, key=key):
            """A ratio to the group's baseline, measured side by side: the
            median over processes, with their range."""
            row = rows.get((group, name))
            add(key, target, row["ratio"] if row else None, limit)
            checks[-1]["range"] = row.get("ratio_range") if row else None

        for shape in ("conv", "dense"):
            group = f"activation_{shape}"
            for name in ("brn", "frn_tlu", "bkn"):
                in_group(group, name, 1.1, f"{name} ≤ 1.1× Keras BN ({shape})")
            add(
                key,
                f"frn ≤ Keras GN ({shape})",
                ratio(ms(group, "frn"), ms(group, "keras_gn")),
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
            in_group(
                group,
                "orth_newton",
                1.3,
                f"Orthogonal newton ≤ 1.3× plain ({kind}, large)",
            )
            add(
                key,
                f"Orthogonal newton ≤ 0.5× eigh ({kind}, large)",
                ratio(ms(group, "orth_newton"), ms(group, "orth_eigh")),
                0.5,
            )
        for name in ("bn_folded", "orthogonal_exported"):
            in_group("inference", name, 1.02, f"{name} inference ≤ 1.02× plain")

    if "tensorflow_xla" in runs and "tensorflow_noxla" in runs:
        xla, noxla = (
            _index(runs["tensorflow_xla"]),
            _index(runs["tensorflow_noxla"]),
        )

        def xla_ratio(group, name):
            a, b = xla.get((group, name)), noxla.get((group, name))
            return a["median_ms"] / b["median_ms"] if a and b else None

        bn = {
            shape: xla_ratio(f"activation_{shape}", "keras_bn")
            for shape in ("conv", "dense")
        }
        for group, name in xla:
            if name in ("keras_bn", "affine") or group == "inference":
                continue
            own = xla_ratio(group, name)
            # The activation layers are held to Keras BN on the same tensor;
            # the others to Keras BN on the conv tensor (the limit)
            # and, reported separately, to their own plain Keras layer.
            shape = "dense" if group == "activation_dense" else "conv"
            add(
                "tensorflow_xla/noxla",
                f"{group}/{name} XLA/no-XLA ≤ Keras BN's ({shape})",
                own,
                bn[shape],
            )
            if group.startswith("weight_") and name != "plain":
                add(
                    "tensorflow_xla/noxla",
                    f"{group}/{name} XLA/no-XLA ≤ the plain layer's",
                    own,
                    xla_ratio(group, "plain"),
                )
    return checks


def _ratio_cell(row) -> str:
    if row.get("ratio") is None:
        return "–"
    cell = f"{row['ratio']:.2f}"
    if row.get("ratio_range") and row.get("processes", 1) > 1:
        cell += " [{:.2f}–{:.2f}]".format(*row["ratio_range"])
    return cell


def markdown(runs: dict, checks: list[dict]) -> str:
    lines = ["# Benchmark results", ""]
    for key, run in runs.items():
        m = run["machine"]
        lines.append(
            f"- **{RUNS[key]}**: {m['device']} ({m['processor']}, "
            f"{m['cpu_count']} cores), Keras {m['keras']}, "
            + ", ".join(f"{k} {m[k]}" for k in ("tensorflow", "jax") if k in m)
            + f", {m['date']}; each comparison in {run['processes']} "
            f"fresh process(es) of {run['repeats']} interleaved rounds, "
            f"calls of ≥ {run['min_call_seconds']} s"
        )
    lines += [
        "",
        "Times are medians per training step (forward, backward, "
        "update), in ms; ratios are to the group's baseline in the "
        "same process, the median over processes, with the range over "
        "processes in brackets (the run-to-run spread).",
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
                    cells += [f"{row['median_ms']:.3f}", _ratio_cell(row)]
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
        if c.get("range"):
            value += " [{:.2f}–{:.2f}]".format(*c["range"])
        limit = "–" if c["limit"] is None else f"{c['limit']:.2f}"
        lines.append(
            f"| {c['run']} | {c['target']} | {value} | "
            f"{limit} | {'yes' if c['met'] else 'NO'} |"
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
