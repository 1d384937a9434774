"""evcmae-bench: one JSON object on stdout whatever the benchmarks print; --device, --quick and
--set reach the benchmark functions that take them."""

import json
import sys
import types

import pytest

from evcmae.tools import bench

NAMES = ["voxelize", "backbone", "detector"]


@pytest.fixture
def fake(monkeypatch):
    """Fake benchmarks that print chatter (as Lightning's banners do) and return their kwargs."""
    module = types.ModuleType("fake_benchmarks")

    def make(name):
        def run(**kwargs):
            print(f"{name} chatter that must not reach stdout")
            return {"ms": len(name), "kwargs": kwargs}

        return run

    for name in NAMES:
        setattr(module, f"bench_{name}", make(name))
    monkeypatch.setitem(sys.modules, "fake_benchmarks", module)
    monkeypatch.setattr(bench, "BENCHMARKS", {n: f"fake_benchmarks:bench_{n}" for n in NAMES})


def test_all_collects_every_benchmark_into_one_json(fake, capsys):
    assert bench.main(["all", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)  # stdout holds exactly one JSON document
    assert {k: result[k]["ms"] for k in NAMES} == {n: len(n) for n in NAMES}
    assert result["machine"]["cpus"] >= 1 and result["machine"]["torch"]
    assert "voxelize chatter" in err


def test_device_and_quick_reach_the_model_benchmarks_only(fake, capsys):
    bench.main(["all", "--json", "--quick"])
    result = json.loads(capsys.readouterr().out)
    assert result["backbone"]["kwargs"] == {"device": "cpu", "quick": True}
    assert result["detector"]["kwargs"] == {"device": "cpu", "quick": True}
    # Voxelization is CPU work wherever it runs: --quick only shrinks its input.
    assert result["voxelize"]["kwargs"] == bench.QUICK_CPU["voxelize"]


def test_set_passes_json_values_as_keyword_arguments(fake, capsys):
    bench.main(["detector", "--json", "--set", 'sizes=["base"]', "--set", "repeats=3", "--set", "root=data/x"])
    kwargs = json.loads(capsys.readouterr().out)["kwargs"]
    assert kwargs == {"device": "cpu", "quick": False, "sizes": ["base"], "repeats": 3, "root": "data/x"}


def test_cuda_without_a_gpu_is_a_one_line_error(fake, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        bench.main(["backbone", "--device", "cuda"])
    assert exc.value.code == 2
    assert "--device cuda: torch sees no CUDA device here" in capsys.readouterr().err


def test_set_needs_key_equals_value(fake, capsys):
    with pytest.raises(SystemExit):
        bench.main(["detector", "--set", "sizes"])
    assert "--set takes KEY=VALUE" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_benchmarks_on_the_cpu_report_their_rows():
    """The real benchmark functions at --quick sizes: every occupancy row, the step breakdown's
    parts, both detector inputs."""
    backbone = bench._run("backbone", "cpu", quick=True)
    assert [r["occupancy"] for r in backbone["rows"]] == [0.02, 0.05, 0.2]
    assert all(r["sparse_ms"] > 0 and r["dense_ms"] > 0 and r["precision"] == "float32" for r in backbone["rows"])
    # Voxel counts follow the occupancy of the 6x24x32 quick grid exactly.
    assert [r["voxels"] for r in backbone["rows"]] == [round(f * 6 * 24 * 32) for f in (0.02, 0.05, 0.2)]
    pretrain = bench._run("pretrain", "cpu", quick=True)
    assert pretrain["steps"] == 2 and pretrain["nonfinite_steps"] == 0
    step_ms = pretrain["ms"]["batch"]
    assert pretrain["steps_per_s"] == pytest.approx(1e3 / step_ms, rel=1e-2)
    assert pretrain["voxels_per_s"] == pytest.approx(pretrain["voxels_per_step"] * 1e3 / step_ms, rel=1e-2)
    assert pretrain["ms"]["training_step"] <= step_ms  # the batch span holds the training step
    detector = bench._run("detector", "cpu", quick=True, options={"precisions": ["float32", "bfloat16"]})
    rows = {(r["input"], r["precision"]): r["ms"] for r in detector["rows"]}
    assert set(rows) == {(i, p) for i in ("sparse", "histogram") for p in ("float32", "bfloat16")}
    assert all(ms > 0 for ms in rows.values())


def test_a_failed_compile_is_a_row_not_a_crash(monkeypatch):
    import torch

    from evcmae.finetune.benchmarks import bench_detector

    def broken(fn, **kwargs):
        raise RuntimeError("no compiler here\nsecond line")

    monkeypatch.setattr(torch, "compile", broken)
    result = bench_detector(quick=True, modes=["eager", "compile"])
    compiled = [r for r in result["rows"] if r["mode"] == "compile"]
    assert [r["input"] for r in compiled] == ["sparse", "histogram"]
    assert all(r["ms"] is None and r["error"] == "RuntimeError: no compiler here" for r in compiled)
    assert all(r["ms"] > 0 for r in result["rows"] if r["mode"] == "eager")


def test_the_new_sizes_column_times_a_fresh_voxel_set_per_call():
    """``new_sizes``: every timed call meets a new voxel set, each larger than the last (as batches
    in training differ), so the row can show a cost paid per new problem size."""
    import torch

    from evcmae.backbones.benchmarks import NEW_SIZE_STEP, _fresh_inputs, bench_backbone

    grid, occupancy = (6, 24, 32), 0.05
    fresh = _fresh_inputs(1, grid, occupancy, 3, torch.Generator().manual_seed(0), 3, "cpu")
    counts = [len(fresh().indices) for _ in range(3)]
    cells = 6 * 24 * 32
    assert counts == [round(occupancy * (1 + NEW_SIZE_STEP * k) * cells) for k in (1, 2, 3)]
    assert len(set(counts)) == 3
    with pytest.raises(StopIteration):  # each set is used once
        fresh()
    out = bench_backbone(device="cpu", quick=True, occupancies=(occupancy,), new_sizes=True)
    (row,) = out["rows"]
    assert row["sparse_new_sizes_ms"] > 0
    assert row["new_sizes_slowdown"] == pytest.approx(row["sparse_new_sizes_ms"] / row["sparse_ms"], rel=0.02)
    assert "sparse_new_sizes_ms" not in bench_backbone(device="cpu", quick=True, occupancies=(occupancy,))["rows"][0]
