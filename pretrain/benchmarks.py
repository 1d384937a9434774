"""Where a pretraining step's time goes, and how the sparse backbone compares with a dense twin.

The step breakdown runs a few real training steps of the Hydra-configured model on the ``tiny``
synthetic preset with Lightning's ``SimpleProfiler`` and reads back its spans: Lightning's own
(training step, backward, optimizer step) and the module's (masking, student, teacher, each loss,
EMA). Reading windows and voxelizing them happen in the data loader, so they are timed directly on
the same dataset and collate function.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path


def _median_ms(values) -> float | None:
    values = list(values)
    return round(statistics.median(values) * 1e3, 2) if values else None


def bench_step_breakdown(
    steps: int = 8, warmup: int = 2, batch_size: int = 2, root: str | None = None, overrides=()
) -> dict:
    """Median milliseconds per step of each part of a pretraining step (one CPU thread)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from evcmae.tools.pretrain import build, config_dir

    root = Path(root or tempfile.mkdtemp(prefix="evcmae_bench_"))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir("pretrain"), version_base="1.3"):
        cfg = compose(
            "pretrain",
            overrides=[
                f"paths.root_dir={root}",
                f"paths.output_dir={root}/run",
                "data=tiny",
                f"data.batch_size={batch_size}",
                "data.num_workers=0",
                "torch_threads=1",
                f"trainer.max_steps={steps + warmup}",
                "trainer.limit_val_batches=0",
                "final_validation=false",
                "~logger",
                "~callbacks",
                "++trainer.enable_progress_bar=false",
                "++trainer.enable_checkpointing=false",
                "++trainer.profiler=simple",
                *overrides,
            ],
        )
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    spans = trainer.profiler.recorded_durations

    def durations(name: str) -> list[float]:
        key = next((k for k in spans if k == name or k.endswith(name)), None)
        return list(spans[key][warmup:]) if key else []

    def part(name: str):
        return _median_ms(durations(name))

    training_step = part("Strategy]SingleDeviceStrategy.training_step")
    backward = part("Strategy]SingleDeviceStrategy.backward")
    ema = part("[evcmae]ema")
    out = {"data": None, "voxelization": None}
    out.update(
        {
            name: part(f"[evcmae]{name}")
            for name in (
                "masking",
                "student",
                "teacher",
                "loss_occupancy",
                "loss_reconstruction",
                "loss_voxel_nce",
                "loss_frame_contrastive",
            )
        }
    )
    out["backward"] = backward
    # optimizer_step wraps the closure (training step + backward) and the EMA update: the update
    # itself is what is left, step by step.
    per_step = [
        durations(n)
        for n in (
            "PretrainModule.optimizer_step",
            "Strategy]SingleDeviceStrategy.training_step",
            "Strategy]SingleDeviceStrategy.backward",
            "[evcmae]ema",
        )
    ]
    if all(len(d) == len(per_step[0]) > 0 for d in per_step):
        out["optimizer"] = _median_ms(o - t - b - e for o, t, b, e in zip(*per_step))
    out["ema"] = ema
    out["training_step"] = training_step

    # Data: reading window pairs vs voxelizing them (the collate function), per batch.
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    dataset, collate = loader.dataset, loader.collate_fn
    read, voxel = [], []
    for b in range(steps):
        start = time.perf_counter()
        samples = [dataset[(b * batch_size + i) % len(dataset)] for i in range(batch_size)]
        mid = time.perf_counter()
        collate(samples)
        read.append(mid - start)
        voxel.append(time.perf_counter() - mid)
    out["data"], out["voxelization"] = _median_ms(read), _median_ms(voxel)
    return {
        "preset": "tiny",
        "batch_size": batch_size,
        "steps": steps,
        "threads": 1,
        "grid": list(collate.voxelizer.spatial_shape),
        "ms": out,
    }


def bench_backbone() -> dict:
    """``evcmae-bench backbone``: sparse vs dense rows plus the pretraining step breakdown."""
    from evcmae.backbones.benchmarks import bench_backbone as sparse_vs_dense

    result = sparse_vs_dense()
    step = bench_step_breakdown()
    result["step_breakdown_ms"] = step.pop("ms")
    result["step_breakdown_setup"] = step
    return result
