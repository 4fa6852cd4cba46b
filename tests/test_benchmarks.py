"""A fast smoke run of the benchmark harness (tiny sizes, not timed): the
compiled loops run for every variant on this backend and the results and
the report are well-formed."""

import json

import keras
import pytest

from benchmarks import bench, report


@pytest.fixture(scope="module")
def quick_results():
    size = bench.SIZES["quick"]
    variants = (
        bench.activation_variants(size["conv"], size["dense"])
        + bench.whitening_variants(size["whiten"])
        + bench.weight_variants(size["weights"])
        + bench.inference_variants(size["dense"])
    )
    results = bench.measure(
        variants, steps=2, repeats=2, xla=True, warmup=1, log=lambda m: None
    )
    return variants, bench.add_ratios(results)


def test_every_variant_is_measured(quick_results):
    variants, results = quick_results
    assert len(results) == len(variants)
    for row in results:
        assert row["median_ms"] > 0
        assert len(row["samples_ms"]) == 2
        low, high = row["iqr_ms"]
        assert low <= row["median_ms"] <= high


def test_ratios_are_to_the_group_baseline(quick_results):
    _, results = quick_results
    for row in results:
        if row["name"] == row["baseline"]:
            assert row["ratio"] == pytest.approx(1.0)
        assert row["ratio"] is not None and row["ratio"] > 0


def test_report_checks_targets_and_writes_files(quick_results, tmp_path):
    _, results = quick_results
    payload = {
        "machine": bench.machine_info(xla=True),
        "steps": 2,
        "repeats": 2,
        "results": results,
    }
    assert payload["machine"]["backend"] == keras.backend.backend()
    name = "jax" if keras.backend.backend() == "jax" else "tensorflow_xla"
    (tmp_path / f"{name}.json").write_text(json.dumps(payload))
    report.main([str(tmp_path)])
    merged = json.loads((tmp_path / "results.json").read_text())
    assert set(merged["runs"]) == {name}
    targets = merged["targets"]
    assert targets and all(isinstance(t["met"], bool) for t in targets)
    # Quick sizes have no "large" weight group: those targets are reported
    # as unmeasured (not met) rather than silently dropped.
    large = [t for t in targets if "large" in t["target"]]
    assert large and all(t["value"] is None and not t["met"] for t in large)
    assert "## Targets" in (tmp_path / "results.md").read_text()


def test_folded_and_exported_models_are_timed_in_inference_mode(quick_results):
    _, results = quick_results
    modes = {r["name"]: r["mode"] for r in results if r["group"] == "inference"}
    assert modes["bn_folded"] == modes["orthogonal_exported"] == "infer"
