"""The detector latency and fine-tuning step benchmarks run and report what they promise."""

import pytest


def test_bench_detector_small(tmp_path):
    from evcmae.events.synth import generate
    from evcmae.finetune.benchmarks import bench_detector

    generate(tmp_path / "tiny", "tiny", 0)
    result = bench_detector(width=320, height=180, repeats=1, warmup=0, root=tmp_path / "tiny")
    assert result["device"] == "cpu" and result["threads"] == 1
    assert result["sparse_ms"] > 0 and result["histogram_ms"] > 0 and result["voxels"] > 0
    assert {r["input"] for r in result["rows"]} == {"sparse", "histogram"}


@pytest.mark.slow
def test_bench_finetune_step_parts_nest_inside_the_step(tmp_path):
    from evcmae.finetune.benchmarks import bench_finetune

    result = bench_finetune(quick=True, root=str(tmp_path))
    ms = result["ms"]
    assert result["device"] == "cpu" and result["threads"] == 1 and result["seq_len"] == 5
    for part in ("encoder", "rvt", "head_and_loss"):
        assert 0 < ms[part] < ms["training_step"], part
    assert ms["training_step"] + ms["backward"] <= ms["batch"]
    dense = result["densify"]
    assert dense["sites"] > 0 and dense["ours_ms"] > 0 and dense["spconv_dense_ms"] > 0
