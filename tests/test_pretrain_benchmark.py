import pytest

from evcmae.pretrain.benchmarks import bench_step_breakdown, module_parts


def test_the_breakdown_names_a_span_for_every_objective():
    assert module_parts(["occupancy", "extra_term"]) == [
        "masking",
        "student",
        "teacher",
        "loss_occupancy",
        "loss_extra_term",
    ]


@pytest.mark.slow
def test_step_breakdown_parts_nest_inside_the_training_step(tmp_path):
    out = bench_step_breakdown(steps=2, warmup=1, root=str(tmp_path))
    ms = out["ms"]
    losses = ("occupancy", "reconstruction", "voxel_nce", "frame_contrastive", "rvt_stages")  # the default five
    parts = ("masking", "student", "teacher", *(f"loss_{name}" for name in losses))
    assert [k for k in ms if k.startswith("loss_")] == [f"loss_{name}" for name in losses]
    assert all(ms[k] is not None and ms[k] > 0 for k in parts + ("data", "voxelization", "backward", "ema"))
    # The module's spans all run inside Lightning's training-step span: their sum cannot exceed it.
    assert sum(ms[k] for k in parts) <= ms["training_step"] * 1.01
    assert ms["optimizer"] > 0, "the optimizer update is what optimizer_step holds beyond its closure and EMA"
    assert out["grid"] == [10, 180, 320]
