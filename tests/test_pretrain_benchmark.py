import pytest

from evcmae.pretrain.benchmarks import bench_step_breakdown


@pytest.mark.slow
def test_step_breakdown_parts_nest_inside_the_training_step(tmp_path):
    out = bench_step_breakdown(steps=2, warmup=1, root=str(tmp_path))
    ms = out["ms"]
    parts = (
        "masking",
        "student",
        "teacher",
        "loss_occupancy",
        "loss_reconstruction",
        "loss_voxel_nce",
        "loss_frame_contrastive",
    )
    assert all(ms[k] is not None and ms[k] > 0 for k in parts + ("data", "voxelization", "backward", "ema"))
    # The module's spans all run inside Lightning's training-step span: their sum cannot exceed it.
    assert sum(ms[k] for k in parts) <= ms["training_step"] * 1.01
    assert ms["optimizer"] > 0, "the optimizer update is what optimizer_step holds beyond its closure and EMA"
    assert out["grid"] == [10, 180, 320]
