"""Side by side with the authors' PyTorch IterNorm.

Huang et al. published IterNorm for PyTorch (github.com/huangleiBuaa/
IterNorm-pytorch, `extension/normailzation/iterative_normalization.py`):
a `torch.autograd.Function` with a hand-written backward pass. This
benchmark times one training step of a trainable per-channel affine layer
followed by the normalizer (forward, backward, SGD update; the affine
layer makes the step compute the gradient with respect to the
normalizer's input, as in `benchmarks.bench`) for:

* ours: `keraslayers.IterativeNormalization`, compiled (`benchmarks.bench`
  loops: `jax.jit`, or `tf.function(jit_compile=True)`), channels last;
* theirs: their module, eager PyTorch on the CPU with 2 threads (the
  machine's cores), channels first, its native layout;
* as the scale of each framework, its own batch normalization
  (`keras.layers.BatchNormalization`, `torch.nn.BatchNorm{1,2}d`).

Same data, same shapes, T = 5, every variant timed once per round in
interleaved rounds in one process (`benchmarks.bench.measure`); ratios are
per round, reported as the median and range over rounds.

The authors' file is not part of this project: pass it with
`--theirs FILE`, e.g. from a clone of their repository (commit 574b124)

    cd IterNorm-pytorch/extension/normailzation
    cp iterative_normalization.py /tmp/theirs.py
    pip install -e ".[authors]"   # torch 2.13.0, CPU build
    make bench-authors THEIRS=/tmp/theirs.py

(`--out` merges this backend's entry into the file). Their module runs
unchanged; one buffer is made contiguous after construction: PyTorch 2
refuses their in-place update of `running_wm`, which they create as an
expanded (memory-sharing) identity.

Their DBN (`dbn.py` in the same repository) whitens a different grouping
(channel i with channels i + G, i + 2G, ...), and the original DBN code is
Lua Torch, which does not run here: DBN is not compared.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import time
import warnings
from pathlib import Path

import keras
import numpy as np

import keraslayers
from benchmarks import bench

# (input shape, group size): the benchmark's activation tensors, the
# whitening group's dense tensor, and a wide conv tensor with groups of 64
# (the shape of the report, where ours was slower).
SHAPES = (
    ((32, 16, 16, 64), 16),
    ((32, 16, 16, 64), 64),
    ((64, 8, 8, 256), 16),
    ((64, 8, 8, 256), 64),
    ((256, 512), 16),
    ((256, 512), 64),
    ((512, 256), 16),
    ((512, 256), 64),
)
T = 5


def _load(path):
    spec = importlib.util.spec_from_file_location("authors_iternorm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torch_model(make_norm, channels, dims):
    import torch

    class Affine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            shape = (1, channels) + (1,) * (dims - 2)
            self.weight = torch.nn.Parameter(torch.ones(shape))
            self.bias = torch.nn.Parameter(torch.zeros(shape))

        def forward(self, x):
            return x * self.weight + self.bias

    return torch.nn.Sequential(Affine(), make_norm())


class _Torch:
    """What `bench.measure` needs of a model: built by a variant, with the
    output shape of the channels-last data it is given."""

    def __init__(self, module, shape):
        self.module = module
        self.output_shape = (None, *shape[1:])


def _channels_first(a):
    return np.ascontiguousarray(np.moveaxis(a, -1, 1))


def _torch_runner(model, x, y, mode, xla):
    import torch
    import torch.nn.functional as F

    module = model.module
    xs = torch.from_numpy(_channels_first(x))
    ys = torch.from_numpy(_channels_first(y))
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3)

    def call(n):
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            loss = F.mse_loss(module(xs), ys)
            loss.backward()
            optimizer.step()

    return call


def _runner(model, x, y, mode, xla):
    if isinstance(model, _Torch):
        return _torch_runner(model, x, y, mode, xla)
    return bench._runner(model, x, y, mode, xla)


def variants(theirs):
    import torch

    out = []
    for shape, m in SHAPES:
        c, dims = shape[-1], len(shape)
        group = f"{shape} group {m}"

        def their_iternorm(c=c, m=m, dims=dims):
            layer = theirs.IterNorm(c, num_channels=m, T=T, dim=dims)
            # Their running whitening matrix is an expanded identity, which
            # PyTorch 2 refuses to update in place; a contiguous copy.
            layer.running_wm = layer.running_wm.clone()
            return layer

        torch_bn = torch.nn.BatchNorm2d if dims == 4 else torch.nn.BatchNorm1d
        made = {
            "keras_bn": lambda: [keras.layers.BatchNormalization()],
            "ours": lambda m=m: [
                keraslayers.IterativeNormalization(
                    group_size=m, num_iterations=T
                )
            ],
        }
        for name, make in made.items():
            out.append(
                bench.Variant(
                    group,
                    name,
                    lambda make=make, shape=shape: bench._after_affine(
                        make(), shape
                    ),
                    shape,
                )
            )
        for name, make in (
            ("torch_bn", lambda c=c, bn=torch_bn: bn(c)),
            ("theirs", their_iternorm),
        ):
            out.append(
                bench.Variant(
                    group,
                    name,
                    lambda make=make, c=c, dims=dims, shape=shape: _Torch(
                        _torch_model(make, c, dims), shape
                    ),
                    shape,
                )
            )
    return out


def _per_round(rows, numerator, denominator):
    a = np.array(rows[numerator]["samples_ms"])
    b = np.array(rows[denominator]["samples_ms"])
    r = a / b
    return {
        "median": float(np.median(r)),
        "range": [float(r.min()), float(r.max())],
    }


def summarize(results):
    groups = {}
    for row in results:
        groups.setdefault(row["group"], {})[row["name"]] = row
    out = []
    for group, rows in groups.items():
        out.append(
            {
                "group": group,
                "input_shape": rows["ours"]["input_shape"],
                "ms": {name: row["median_ms"] for name, row in rows.items()},
                "ours_over_theirs": _per_round(rows, "ours", "theirs"),
                "ours_over_keras_bn": _per_round(rows, "ours", "keras_bn"),
                "theirs_over_torch_bn": _per_round(rows, "theirs", "torch_bn"),
            }
        )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--theirs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    # Their module calls PyTorch's deprecated positional-scalar signatures.
    warnings.filterwarnings("ignore", category=UserWarning)
    theirs = _load(args.theirs)
    backend = keras.backend.backend()
    key = "jax" if backend == "jax" else "tensorflow_xla"
    start = time.perf_counter()
    results = bench.measure(
        variants(theirs), args.repeats, xla=True, runner=_runner
    )
    payload = json.loads(args.out.read_text()) if args.out.exists() else {}
    payload[key] = {
        "machine": bench.machine_info(xla=True),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "theirs_sha256": hashlib.sha256(args.theirs.read_bytes()).hexdigest(),
        "T": T,
        "summary": summarize(results),
        "results": results,
    }
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"authors ({key}): {time.perf_counter() - start:.0f} s -> {args.out}")
    for row in payload[key]["summary"]:
        r = row["ours_over_theirs"]
        print(
            f"  {row['group']}: ours/theirs {r['median']:.2f} "
            f"[{r['range'][0]:.2f}-{r['range'][1]:.2f}]"
        )


if __name__ == "__main__":
    main()
