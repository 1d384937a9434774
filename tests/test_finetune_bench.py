"""The detector latency benchmark runs and reports both inputs."""


def test_bench_detector_small(tmp_path):
    from evcmae.events.synth import generate
    from evcmae.finetune.benchmarks import bench_detector

    generate(tmp_path / "tiny", "tiny", 0)
    result = bench_detector(width=320, height=180, repeats=1, warmup=0, root=tmp_path / "tiny")
    assert result["device"] == "cpu" and result["threads"] == 1
    assert result["sparse_ms"] > 0 and result["histogram_ms"] > 0 and result["voxels"] > 0
    assert {r["input"] for r in result["rows"]} == {"sparse", "histogram"}
