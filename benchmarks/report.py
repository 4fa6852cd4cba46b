"""Merges the per-backend benchmark files into results.json and writes a
readable table with the targets checked (results.md).

Usage: python -m benchmarks.report benchmarks/results
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

RUNS = {
    "tensorflow_xla": "TensorFlow + XLA",
    "tensorflow_noxla": "TensorFlow, no XLA",
    "jax": "JAX (jit)",
}


# Keras's own layers in the comparisons: baselines, not held to targets.
KERAS_BASELINES = ("keras_bn", "keras_gn", "affine", "plain")


def load(folder: Path) -> dict:
    runs = {}
    for key in RUNS:
        path = folder / f"{key}.json"
        if path.exists():
            runs[key] = json.loads(path.read_text())
    if not runs:
        raise SystemExit(f"report: no benchmark files in {folder}")
    return runs


def load_authors(folder: Path) -> dict:
    """The side-by-side with the authors' PyTorch IterNorm
    (benchmarks/authors.py), per backend; empty if it was not run."""
    path = folder / "authors.json"
    return json.loads(path.read_text()) if path.exists() else {}


def authors_targets(authors: dict) -> list[dict]:
    """Ours ahead of the authors' IterNorm on every shape: the median of the
    per-round ratios ours/theirs, with their range."""
    checks = []
    for key, run in authors.items():
        for row in run["summary"]:
            ratio = row["ours_over_theirs"]
            check = {
                "run": f"authors/{key}",
                "target": f"IterNorm ≤ 1× the authors' ({row['group']})",
                "value": ratio["median"],
                "limit": 1.0,
                "met": ratio["median"] <= 1.0,
                "range": ratio["range"],
            }
            if not check["met"]:
                check["why"] = _authors_miss(authors, key, row)
            checks.append(check)
    return checks


def _authors_miss(authors: dict, key: str, row: dict) -> str:
    """What the measurements say about a shape where ours is not ahead:
    each framework's BN on the same tensor, and ours against it, on this
    backend and on the others measured."""
    ms = row["ms"]
    text = (
        f"Here Keras BN itself takes {ms['keras_bn']:.2f} ms a step "
        f"against torch BN's {ms['torch_bn']:.2f}; ours costs "
        f"{row['ours_over_keras_bn']['median']:.2f}× Keras BN and theirs "
        f"{row['theirs_over_torch_bn']['median']:.2f}× torch BN"
    )
    for other, run in authors.items():
        same = [r for r in run["summary"] if r["group"] == row["group"]]
        if other != key and same:
            text += (
                f"; on {RUNS.get(other, other)} Keras BN takes "
                f"{same[0]['ms']['keras_bn']:.2f} ms and ours is "
                f"{same[0]['ours_over_theirs']['median']:.2f}× theirs"
            )
    return (
        text + ". The compiler's cost for the BN-like part of the step "
        "(reductions over the channels-last rows) differs between backends, "
        "and it is shared by ours and by Keras BN."
    )


def authors_lines(authors: dict) -> list[str]:
    """A table per backend: each framework's IterNorm step and BN step, and
    the ratios measured round by round in one process."""
    if not authors:
        return []
    lines = [
        "## Beside the authors' IterNorm (PyTorch)",
        "",
        "One training step of our IterNorm (compiled) and of the authors' "
        "PyTorch IterNorm (eager), each beside its framework's BN on the same "
        "tensor, interleaved round by round in one process "
        "(benchmarks/authors.py). Ratios: median over rounds [range].",
        "",
    ]
    for key, run in authors.items():
        m = run["machine"]
        lines += [
            f"**{RUNS.get(key, key)}**, T = {run['T']}: {m['processor']}, "
            f"{m['cpu_count']} cores, torch {run['torch']} "
            f"({run['torch_threads']} threads), their file sha256 "
            f"{run['theirs_sha256'][:12]}…, {m['date']}",
            "",
            "| shape, group | ours ms | theirs ms | ours / theirs "
            "| ours / Keras BN | theirs / torch BN |",
            "|---|---|---|---|---|---|",
        ]

        def cell(ratio):
            return "{:.2f} [{:.2f}–{:.2f}]".format(
                ratio["median"], *ratio["range"]
            )

        for row in run["summary"]:
            lines.append(
                f"| {row['group']} | {row['ms']['ours']:.2f} | "
                f"{row['ms']['theirs']:.2f} | {cell(row['ours_over_theirs'])} "
                f"| {cell(row['ours_over_keras_bn'])} "
                f"| {cell(row['theirs_over_torch_bn'])} |"
            )
        lines.append("")
    return lines


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

        def pair(group, name, other, limit, target, rows=rows, key=key):
            """The ratio of two variants of one group: of the medians, and
            the range of the per-process ratios (same process each)."""
            a, b = rows.get((group, name)), rows.get((group, other))
            value = a["median_ms"] / b["median_ms"] if a and b else None
            add(key, target, value, limit)
            if a and b and "process_medians_ms" in a:
                each = [
                    x / y
                    for x, y in zip(
                        a["process_medians_ms"],
                        b["process_medians_ms"],
                        strict=True,
                    )
                ]
                if len(each) > 1:
                    checks[-1]["range"] = [min(each), max(each)]

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
            pair(group, "frn", "keras_gn", 1.0, f"frn ≤ Keras GN ({shape})")
        pair(
            "whitening",
            "iternorm_g64_t5",
            "dbn_g64",
            0.5,
            "IterNorm (T=5) ≤ 0.5× DBN at group 64",
        )
        for kind in ("dense", "conv"):
            group = f"weight_{kind}_large"
            in_group(
                group,
                "orth_newton",
                1.3,
                f"Orthogonal newton ≤ 1.3× plain ({kind}, large)",
            )
            pair(
                group,
                "orth_newton",
                "orth_eigh",
                0.5,
                f"Orthogonal newton ≤ 0.5× eigh ({kind}, large)",
            )
        for name in ("bn_folded", "orthogonal_exported"):
            in_group("inference", name, 1.02, f"{name} inference ≤ 1.02× plain")
        if key == "tensorflow_noxla":
            continue  # the roofline targets are set for XLA-compiled steps

        def floor(group, name, limit, target, rows=rows, key=key):
            """A step's time over its floor (benchmarks/roofline.py)."""
            row = rows.get((group, name))
            add(key, target, row.get("over_floor") if row else None, limit)
            checks[-1]["range"] = row.get("over_floor_range") if row else None

        for shape in ("conv", "dense"):
            group = f"activation_{shape}"
            for name in ("dbn16", "iternorm16"):
                floor(group, name, 3.0, f"{name} ≤ 3× its floor ({shape})")
            in_group(
                group, "iternorm16", 4.0, f"iternorm16 ≤ 4× Keras BN ({shape})"
            )
        for group in sorted({g for g, _ in rows if g.startswith("weight_")}):
            plain = rows.get((group, "plain"))
            for name in ("wn", "cwn", "ws", "orth_newton", "orth_eigh"):
                row = rows.get((group, name))
                if not (row and plain and "kernel_side" in row):
                    continue
                # Time over (plain step + the kernel side's own floor): a
                # kernel-sized computation must cost like one.
                value = row["median_ms"] / (
                    plain["median_ms"] + row["kernel_side"]["floor_ms"]
                )
                add(
                    key,
                    f"{group}/{name} ≤ 1.2× (plain + own floor)",
                    value,
                    1.2,
                )

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
            if (
                name in KERAS_BASELINES
                or name.endswith("_again")
                or group == "inference"
            ):
                continue
            own = xla_ratio(group, name)
            if group.startswith("weight_"):
                # XLA changes the cost of the plain Keras Dense/Conv2D the
                # weight normalizers wrap (its own ratio is up to 60 on a
                # CPU); Keras BN's ratio would measure that, not the
                # normalizer. The limit is Keras's own: BN's or the plain
                # layer's, whichever is larger.
                plain = xla_ratio(group, "plain")
                add(
                    "tensorflow_xla/noxla",
                    f"{group}/{name} XLA/no-XLA ≤ Keras's own "
                    f"(max of BN's {bn['conv']:.2f}, plain layer's "
                    f"{plain:.2f})",
                    own,
                    max(bn["conv"], plain),
                )
            else:
                # Activation layers against Keras BN on the same tensor; the
                # whitening comparison's (512, 256) input is dense-shaped.
                shape = "conv" if group == "activation_conv" else "dense"
                add(
                    "tensorflow_xla/noxla",
                    f"{group}/{name} XLA/no-XLA ≤ Keras BN's ({shape})",
                    own,
                    bn[shape],
                )
    return checks


def _ratio_cell(row) -> str:
    if row.get("ratio") is None:
        return "–"
    cell = f"{row['ratio']:.2f}"
    if row.get("ratio_range") and row.get("processes", 1) > 1:
        cell += " [{:.2f}–{:.2f}]".format(*row["ratio_range"])
    return cell


# Why a target is missed, as found when looking into each miss on the
# machine the committed results come from. Regular expressions searched in
# order in "<run> <target>"; attached to missed targets only.
REASONS = [
    (
        r"(orth_eigh|dbn_g\d+|dbn\d+) XLA/no-XLA",
        "TensorFlow's XLA compiles `eigh` into a Jacobi iteration whose "
        "sweeps are sequential loops (one float32 matrix, forward: 2.5 ms "
        "against 0.5 ms without XLA at 64, 14 against 1.1 at 128, 121 "
        "against 4.7 at 256, 2.2 s against 27 ms at 512). No XLA-compilable "
        "replacement is as exact; the layers warn when it happens and "
        "point to the Newton forms, which are fast under XLA.",
    ),
    (
        r"Orthogonal newton ≤ 0\.5× eigh|IterNorm \(T=5\) ≤ 0\.5× DBN",
        "On a CPU, LAPACK's eigendecomposition is fast (forward, one "
        "float32 matrix: 0.5 ms at 64, 1.1 ms at 128, 27 ms at 512) and "
        "costs about as much as the Newton form's matrix products, which "
        "are differentiated through as well. The papers' speed argument "
        "holds where eigh is slow next to products: on GPUs, and under "
        "TensorFlow's XLA, where it is met unless a convolution dominates "
        "the step (XLA's CPU convolution: the plain conv step is 30-60× "
        "slower than without XLA).",
    ),
    (
        r"tensorflow_(no)?xla frn_tlu ≤ 1\.1× Keras BN \(dense\)",
        "On a dense input FRN has no spatial axes to average over, so "
        "ν² = x² and its factor 1/√(ν²+ε) (and that factor's derivative) "
        "is computed per element, where BN computes one per channel; TLU "
        "adds a comparison and a select with their backward. On "
        "TensorFlow, with and without XLA, that extra elementwise work "
        "shows (see the FRN and FRN + TLU rows of the dense table against "
        "JAX's, which fuses more of it).",
    ),
    (
        r"tensorflow_noxla Orthogonal newton ≤ 1\.3× plain \(conv, large\)",
        "The convolution comparison uses 8 images, because XLA's CPU "
        "convolution is slow (278 ms per plain step against 4.6 ms with "
        "TensorFlow's oneDNN kernels). Next to the fast oneDNN step the "
        "kernel side shows: S = ZZᵀ over 1152 inputs, 12 products of "
        "128 × 128 matrices and W = BZ, with their backward, about 4 ms "
        "per step whatever the batch, so its share falls as the batch "
        "grows. With XLA and on JAX, ONI costs 0.98–1.03× the plain step; "
        "groups of 64 bring it to 1.71× here.",
    ),
    (
        r"(orthogonal_exported|bn_folded) inference",
        "The exported (folded) model is layer for layer the plain model: "
        "same classes, shapes and dtypes. The A/A control, the plain model "
        "timed a second time, shows the same ratio (see Noise floor).",
    ),
    (
        r"activation_conv/frn XLA/no-XLA",
        "Within TensorFlow + XLA's noise on this tensor: Keras BN timed "
        "twice gives 1.22 [0.87–1.37] (the A/A control). FRN is faster "
        "than Keras BN with XLA (0.73× [0.55–0.90]) and without (0.74×); "
        "the XLA/no-XLA ratio divides medians taken in different processes.",
    ),
    (
        r"(activation_dense|whitening)/(frn|bkn|iternorm\w*) XLA/no-XLA",
        "XLA's gain on this CPU comes from fusing elementwise passes, and "
        "Keras BN on a (256, 512) tensor is all elementwise: XLA makes its "
        "step 5× faster (ratio 0.20). These layers are faster with XLA "
        "too, by less: FRN and BKN by 0.20–0.21 (equal to BN's within the "
        "runs' spread); IterNorm, whose matrix products already run as "
        "oneDNN kernels without XLA, by 0.35–0.53.",
    ),
]


# Reasons computed from the probes (benchmarks/probes.py: the rates of the
# operations a layer is made of, measured alone next to the large product)
# and from the results themselves. Each takes (match, check, runs, probes)
# and returns the text, or None when what it needs was not measured.


def _row(runs, run, group, name):
    rows = runs.get(run, {}).get("results", [])
    return next(
        (r for r in rows if r["group"] == group and r["name"] == name), None
    )


def _tensor(shape):
    return (
        "conv tensor (4 groups of 8192 rows)"
        if shape == "conv"
        else "dense tensor (32 groups of 256 rows)"
    )


def _whitening_floor(match, check, runs, probes):
    run, shape, name = check["run"], match["shape"], match["name"]
    probe = probes.get(run, {}).get("whitening_products", {})
    row = _row(runs, run, f"activation_{shape}", name)
    if _tensor(shape) not in probe or row is None:
        return None
    share = probe[_tensor(shape)]["of_large"]
    matrices = probes[run].get("matrices", {})
    if name.startswith("dbn"):
        # DBN inverts each group's Σ by an eigendecomposition.
        eigh = matrices.get("eigh 16 x 16 (9 m^3)")
        per_group = "eigendecompositions of 16 × 16 matrices" + (
            f" (one alone, priced at 9m³ FLOPs, runs at "
            f"{eigh['of_large']:.1%} of the large product's rate)"
            if eigh
            else ""
        )
    else:
        small = matrices.get("16 x 16 product")
        per_group = "Newton iterations on 16 × 16 matrices" + (
            f" (a 16 × 16 product alone runs at {small['of_large']:.1%} of "
            "the large product's rate)"
            if small
            else ""
        )
    return (
        "The floor prices every FLOP at the rate of a 2048² product. "
        "Whitening's FLOPs are thin products, 16 columns per group "
        "(Σ = XᵀX/n and XΦ), and those products alone, timed in a "
        f"compiled loop on this tensor (benchmarks/probes.py), run at "
        f"{share:.0%} of that rate on {RUNS.get(run, run)}. At that rate "
        f"the step is {row['over_floor'] * share:.1f}× its floor: what is "
        f"left is the per-group {per_group}, the statistics' reductions "
        "and the elementwise passes."
    )


def _iternorm_vs_bn(match, check, runs, probes):
    run, shape = check["run"], match["shape"]
    probe = probes.get(run, {}).get("whitening_products", {})
    it = _row(runs, run, f"activation_{shape}", "iternorm16")
    bn = _row(runs, run, f"activation_{shape}", "keras_bn")
    if _tensor(shape) not in probe or not (it and bn and "flops" in it):
        return None
    share = probe[_tensor(shape)]["of_large"]
    thin_floor = it["floor_ms"] / share  # compute-bound: FLOPs / rate
    return (
        f"Keras BN's step is memory-bound ({bn['median_ms']:.2f} ms). "
        f"IterNorm's counted work is {it['flops'] / bn['flops']:.0f}× BN's "
        "FLOPs, most of them in thin products that run at "
        f"{share:.0%} of the large product's rate here (probes): at that "
        f"rate its floor alone is {thin_floor / bn['median_ms']:.1f}× BN's "
        f"whole step, and the measured step is "
        f"{it['median_ms'] / thin_floor:.1f}× that floor. Meeting 4× would "
        "need products of 16-column groups at a rate this backend's "
        "compiler does not reach on this CPU."
    )


# One orthogonalized group's width (units) per weight comparison.
WIDTHS = {
    **{
        f"weight_dense_{k}": v
        for k, v in (("small", 64), ("medium", 256), ("large", 512))
    },
    **{
        f"weight_conv_{k}": v
        for k, v in (("small", 16), ("medium", 64), ("large", 128))
    },
}


def _orthogonal_kernel(match, check, runs, probes):
    run, group, name = check["run"], match["group"], match["name"]
    width = WIDTHS.get(group)
    row, plain = _row(runs, run, group, name), _row(runs, run, group, "plain")
    if not (width and row and plain):
        return None
    op = "product" if name == "orth_newton" else "eigh"
    key = (
        f"{width} x {width} product"
        if op == "product"
        else f"eigh {width} x {width} (9 m^3)"
    )
    probe = probes.get(run, {}).get("matrices", {}).get(key)
    if probe is None:
        return None
    share = probe["of_large"]
    own = row["kernel_side"]["floor_ms"] / share
    what = (
        f"{width} × {width} products (3T − 3 = 12 per step, and their backward)"
        if op == "product"
        else f"`eigh` of a {width} × {width} matrix"
    )
    at_rate = row["median_ms"] / (plain["median_ms"] + own)
    return (
        f"The layer's own floor is its {what}, priced at the 2048² "
        f"product's rate; measured alone (probes), that operation runs at "
        f"{share:.0%} of it on {RUNS.get(run, run)}"
        + (
            " (XLA's Jacobi `eigh`, see the XLA/no-XLA reason)"
            if op == "eigh" and run == "tensorflow_xla"
            else ""
        )
        + f". At that rate the step is {at_rate:.2f}× (plain + own floor)"
        + (
            "; what remains above 1.2× is not broken down (the probes time "
            "forward products, not the backward pass's transposed products "
            "and sums)"
            if at_rate > 1.2
            else ""
        )
        + ". Groups of 64 are the remedy the layer offers "
        "(orth_newton_g64)."
    )


def _weight_norm(match, check, runs, probes):
    run, group, name = check["run"], match["group"], match["name"]
    width = WIDTHS.get(group)
    row, plain = _row(runs, run, group, name), _row(runs, run, group, "plain")
    side = probes.get(run, {}).get("weight_norm_kernel_side", {})
    key = f"{width}x{width}"
    if not (group.startswith("weight_dense") and row and plain) or (
        key not in side or "kernel_side" not in row
    ):
        return None
    extra = row["median_ms"] - plain["median_ms"]
    own = row["kernel_side"]["floor_ms"]
    return (
        "The Dense layer does not form W: the per-unit factors scale the "
        "outputs"
        + (
            ", and centering each unit's weights is centering each input row"
            if name != "wn"
            else ""
        )
        + ". What it adds to the plain step is kernel-side work in small "
        "pieces: the per-unit statistics of V"
        + (
            " (a mean, then a centered copy of V that the compiler writes "
            "out to reduce it)"
            if name != "wn"
            else " (its norms)"
        )
        + ", the factors applied to the outputs and to ∂L/∂y, the "
        "reduction for the factors' gradient, and V's share of ∂L/∂V "
        f"fused into the update. Here that is {extra:.3f} ms over the "
        f"plain step's {plain['median_ms']:.3f} ms, {extra / own:.1f}× the "
        "kernel side's own floor (its passes over the kernel at the "
        "measured bandwidth); the kernel side alone, timed on a "
        f"{width} × {width} kernel (probes, W formed), runs at "
        f"{side[key]['over_floor']:.1f}× that floor"
        + (
            ". The excess is in how XLA:CPU runs the per-unit reductions: "
            "it hands them to YNNPACK, at about 20 µs a call here. "
            "Measured on JAX at 256 wide "
            "(2026-12-05, this layer's step alone in a 1000-step loop, "
            "twice): with the default fusions CWN costs 1.45–1.52× the "
            "plain step and WN 1.19–1.33×, the compiled CWN step holding "
            "5 YNNPACK reductions to the plain step's 2 (WS's are CWN's); "
            "with an XLA flag "
            "that empties the list of YNNPACK fusion types, 1.22–1.26× and "
            "1.15–1.16×"
            if run == "jax"
            else ""
        )
        + "."
    )


def _oni_groups(match, check, runs, probes):
    run = check["run"]
    one = _row(runs, run, "weight_dense_large", "orth_newton")
    grouped = _row(runs, run, "weight_dense_large", "orth_newton_g64")
    measured = (
        f" (in this run: {one['ratio']:.1f}× → {grouped['ratio']:.1f}× the "
        "plain step)"
        if one and grouped
        else ""
    )
    return (
        "Inherent to one 512-row group at batch 128: the Newton iteration "
        "costs 3T−3 = 12 products of 512×512 matrices per step (and their "
        "backward), whatever the batch, against the layer's three "
        "128×512×512 products. Groups of 64 (orth_newton_g64) make those "
        "products (512/64)² = 64 times cheaper and S = ZZᵀ and W = BZ 8 "
        f"times{measured}; a larger batch or a convolution (the conv "
        "target is met with XLA and on JAX) amortizes the rest."
    )


def _within_noise(match, check, runs, probes):
    run, shape = check["run"], match["shape"]
    again = _row(runs, run, f"activation_{shape}", "keras_bn_again")
    if not (again and again.get("ratio_range") and check.get("range")):
        return None
    # Noise explains a miss only if the miss is smaller than the A/A
    # control's own excursion: some process within the limit scaled by the
    # largest ratio Keras BN gave against itself.
    if check["range"][0] > check["limit"] * max(again["ratio_range"][1], 1):
        return None
    return (
        f"Within this run's noise: Keras BN timed twice gives "
        f"{again['ratio']:.2f} [{again['ratio_range'][0]:.2f}–"
        f"{again['ratio_range'][1]:.2f}] (the A/A control), and "
        f"{match['name'].upper()}'s ratio ranges over "
        f"{check['range'][0]:.2f}–{check['range'][1]:.2f} between processes."
    )


def _xla_same(match, check, runs, probes):
    group, name = match["group"], match["name"]
    on = _row(runs, "tensorflow_xla", group, name)
    off = _row(runs, "tensorflow_noxla", group, name)
    if not (on and off):
        return None
    side = on.get("kernel_side", {}).get("flops", 0) / on.get("flops", 1)
    return (
        f"Relative to the plain layer in the same process the layer costs "
        f"{on['ratio']:.2f}× with XLA and {off['ratio']:.2f}× without; "
        "the XLA/no-XLA limit divides medians taken in different "
        "processes, whose run-to-run spread is larger than the gap"
        + (
            f". {side:.0%} of this step's counted FLOPs are the kernel "
            "side's matrix products, which run as compiled products with "
            "or without XLA; XLA's gain is in fusing elementwise work"
            if side > 0.5
            else ""
        )
        + "."
    )


def _xla_gain(match, check, runs, probes):
    group, name = match["group"], match["name"]
    on = _row(runs, "tensorflow_xla", group, name)
    off = _row(runs, "tensorflow_noxla", group, name)
    bn_on = _row(runs, "tensorflow_xla", "activation_dense", "keras_bn")
    bn_off = _row(runs, "tensorflow_noxla", "activation_dense", "keras_bn")
    if not (on and off and bn_on and bn_off):
        return None
    bn = bn_on["median_ms"] / bn_off["median_ms"]
    own = on["median_ms"] / off["median_ms"]
    text = (
        "XLA's gain on this CPU comes from fusing elementwise passes, and "
        "Keras BN on a (256, 512) tensor is all elementwise: XLA makes its "
        f"step {1 / bn:.1f}× faster (ratio {bn:.2f}). This layer is "
        f"{'faster' if own < 1 else 'slower'} with XLA by less "
        f"(ratio {own:.2f})"
    )
    if name.startswith("iternorm"):
        text += (
            "; its matrix products already run as oneDNN kernels without "
            "XLA, and XLA's gain is in the elementwise work around them"
        )
    elif name.startswith("frn"):
        text += (
            "; on a dense input FRN's factor 1/√(ν²+ε) is computed per "
            "element (ν² = x²), work XLA fuses but does not remove"
        )
    return text + "."


COMPUTED_REASONS = [
    (r"Orthogonal newton ≤ 1\.3× plain \(dense, large\)", _oni_groups),
    (
        r"(?P<name>dbn16|iternorm16) ≤ 3× its floor \((?P<shape>\w+)\)",
        _whitening_floor,
    ),
    (r"iternorm16 ≤ 4× Keras BN \((?P<shape>\w+)\)", _iternorm_vs_bn),
    (
        r"^(tensorflow_xla|jax) (?P<group>weight_\w+)/"
        r"(?P<name>orth_newton|orth_eigh) ≤ 1\.2×",
        _orthogonal_kernel,
    ),
    (
        r"^(tensorflow_xla|jax) (?P<group>weight_dense_\w+)/"
        r"(?P<name>wn|cwn|ws) ≤ 1\.2×",
        _weight_norm,
    ),
    (
        r"(?P<name>bkn|brn|frn_tlu) ≤ 1\.1× Keras BN \((?P<shape>\w+)\)",
        _within_noise,
    ),
    (r"(?P<name>frn) ≤ Keras GN \((?P<shape>\w+)\)", _within_noise),
    (
        r"(?P<group>activation_dense|whitening)/"
        r"(?P<name>frn\w*|bkn|brn|iternorm\w*) XLA/no-XLA",
        _xla_gain,
    ),
    (
        r"(?P<group>weight_\w+)/(?P<name>wn|cwn|ws|orth_newton\w*) XLA/no-XLA",
        _xla_same,
    ),
]


def _reason(check, runs=None, probes=None) -> str | None:
    text = f"{check['run']} {check['target']}"
    for pattern, explain in COMPUTED_REASONS:
        match = re.search(pattern, text)
        if match:
            why = explain(match, check, runs or {}, probes or {})
            if why:
                return why
    for pattern, why in REASONS:
        if re.search(pattern, text):
            return why
    return None


def _floor_cell(row) -> str:
    if row.get("over_floor") is None:
        return "–"
    cell = f"{row['over_floor']:.1f}"
    if row.get("over_floor_range") and row.get("processes", 1) > 1:
        cell += " [{:.1f}–{:.1f}]".format(*row["over_floor_range"])
    return cell


def _si(value) -> str:
    for factor, prefix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if value >= factor:
            return f"{value / factor:.3g}{prefix}"
    return f"{value:.3g} "


def limits_lines(runs: dict) -> list[str]:
    """The machine's measured limits, per run (median over processes)."""
    lines = []
    for key, run in runs.items():
        limits = run.get("limits") or []
        if not limits:
            continue
        flops = [x["flops_per_s"] for x in limits]
        large = [x["large_pass_bytes_per_s"] for x in limits]
        by_size = {}
        for x in limits:
            for size, value in x["bytes_per_s_by_elements"].items():
                by_size.setdefault(int(size), []).append(value)
        sizes = ", ".join(
            f"{_si(4 * size)}B: {np.median(v) / 1e9:.0f}"
            for size, v in sorted(by_size.items())
            if size != 32 * 2**20
        )
        lines.append(
            f"- **{RUNS[key]}**: matrix product {np.median(flops) / 1e9:.0f} "
            f"GFLOP/s [{min(flops) / 1e9:.0f}–{max(flops) / 1e9:.0f} over "
            f"{len(flops)} processes]; elementwise pass, GB/s by tensor "
            f"size: {sizes}; over 128 MiB (out of cache): "
            f"{np.median(large) / 1e9:.0f} GB/s"
        )
    return lines


def markdown(
    runs: dict, checks: list[dict], authors: dict | None = None
) -> str:
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
            + "".join(
                f"; re-measured {u['date']}: {', '.join(u['groups'])}"
                for u in run.get("updates", [])
            )
        )
    lines += [
        "",
        "Times are medians per training step (forward, backward, "
        "update), in ms; ratios are to the group's baseline in the "
        "same process, the median over processes, with the range over "
        "processes in brackets (the run-to-run spread).",
        "",
    ]
    controls = [
        f"{RUNS[key]}: "
        + ", ".join(
            f"{row['group']} {row['ratio']:.2f}"
            + (
                " [{:.2f}–{:.2f}]".format(*row["ratio_range"])
                if row.get("ratio_range")
                else ""
            )
            for row in run["results"]
            if row["name"].endswith("_again")
        )
        for key, run in runs.items()
    ]
    limits = limits_lines(runs)
    if limits:
        lines += [
            "Roofline: the machine's limits, measured in each benchmark "
            "process with the layers' backend (benchmarks/roofline.py). A "
            "step's floor is max(FLOPs / FLOP/s, bytes / bytes/s) for its "
            "counted work; `× floor` is its time over that floor.",
            "",
            *limits,
            "",
        ]
    lines += [
        "Noise floor: each `…_again` row is the baseline built and timed "
        "a second time (an A/A control); its ratio should be 1.",
        "",
        *(f"- {c}" for c in controls),
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
            + " | ".join(f"{RUNS[k]} ms | ratio | × floor" for k in runs)
            + " |"
        )
        lines += [header, "|---" * (1 + 3 * len(runs)) + "|"]
        for name, per_run in names.items():
            cells = []
            for k in runs:
                row = per_run.get(k)
                if row is None:
                    cells += ["–", "–", "–"]
                else:
                    cells += [
                        f"{row['median_ms']:.3f}",
                        _ratio_cell(row),
                        _floor_cell(row),
                    ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        counted = next(
            (r for per in names.values() for r in per.values() if "flops" in r),
            None,
        )
        if counted:
            lines += [
                "",
                "Counted per step (benchmarks/roofline.py): "
                + "; ".join(
                    f"{name} {_si(r['flops'])}FLOP, {_si(r['bytes'])}B"
                    for name, per in names.items()
                    for r in [next(iter(per.values()))]
                    if "flops" in r
                )
                + ".",
            ]
        lines.append("")
    lines += authors_lines(authors or {})
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
    reasons = {}
    for c in checks:
        if not c["met"]:
            reasons.setdefault(c.get("why") or "not explained yet", []).append(
                f"{c['run']}: {c['target']}"
            )
    if reasons:
        lines += ["", "## Why the misses", ""]
        for why, which in reasons.items():
            lines += [f"- {why}", *(f"  - {w}" for w in which)]
    return "\n".join(lines) + "\n"


def main(argv=None):
    folder = Path((argv or sys.argv[1:] or ["benchmarks/results"])[0])
    runs = load(folder)
    probes_path = folder / "probes.json"
    probes = json.loads(probes_path.read_text()) if probes_path.exists() else {}
    authors = load_authors(folder)
    checks = targets(runs) + authors_targets(authors)
    for check in checks:
        if not check["met"] and not check.get("why"):
            check["why"] = _reason(check, runs, probes)
    (folder / "results.json").write_text(
        json.dumps({"runs": runs, "targets": checks}, indent=1)
    )
    (folder / "results.md").write_text(markdown(runs, checks, authors))
    met = sum(c["met"] for c in checks)
    print(
        f"report: {met}/{len(checks)} targets met; wrote "
        f"{folder / 'results.json'} and {folder / 'results.md'}"
    )


if __name__ == "__main__":
    main()
