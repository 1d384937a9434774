"""Pretraining speed: steps/s, voxels/s, and where a step's time goes.

A few real training steps of the Hydra-configured model run under Lightning's ``SimpleProfiler``;
its spans are read back: Lightning's own (training step, backward, optimizer step, the whole batch)
and the module's (masking, student, teacher, each loss, EMA). On CUDA the profiler synchronises at
every span boundary, so each span holds its own kernels (asynchronous launches would otherwise be
billed to whichever span waits next); that removes the CPU/GPU overlap between spans, so the step
time is an upper bound. Reading windows and voxelizing them happen in the data loader, so they are
timed directly on the same dataset and collate function.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.profilers import SimpleProfiler

from evcmae.events.benchmarks import check_device, device_info

# The module's spans before the objectives; each configured objective adds its own loss_<name>
# (a fixed list once left out rvt_stages, the second most costly forward on the GPU). The per-term
# gradient norms have no span: they come out of the backward (pretrain/term_gradients.py).
MODULE_PARTS = ("masking", "student", "teacher")


def module_parts(objectives) -> list[str]:
    """The spans the step breakdown reports, for a module with these objective names, in order."""
    return [*MODULE_PARTS, *(f"loss_{name}" for name in objectives)]


# Per device: the data and precision a run measures by default. The CPU figure is the tiny preset
# at batch 2 (what a 2-core machine trains); on a GPU the demo street at full 640x360, batch 8.
DEFAULTS = {
    "cpu": {"preset": "tiny", "batch_size": 2, "precision": "32-true", "num_workers": 0, "threads": 1, "extra": ()},
    "cuda": {
        "preset": "demo",
        "batch_size": 8,
        "precision": "16-mixed",
        "num_workers": 4,
        "threads": "null",  # torch's default: the CPU only feeds the GPU
        "extra": ("data.downsample=1", "data.synth_workers=8"),
    },
}


class SyncedSimpleProfiler(SimpleProfiler):
    """``SimpleProfiler`` that waits for the GPU (where there is one) at each span's start and end."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.synchronize = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def start(self, action_name: str) -> None:
        self.synchronize()
        super().start(action_name)

    def stop(self, action_name: str) -> None:
        self.synchronize()
        super().stop(action_name)


class _CountVoxels(pl.Callback):
    """Voxels of the full (anchor) input of each training batch: what the teacher encodes."""

    def __init__(self):
        self.counts: list[int] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.counts.append(int(batch.anchor.coords.shape[0]))


def _median_ms(values) -> float | None:
    values = list(values)
    return round(statistics.median(values) * 1e3, 2) if values else None


def bench_step_breakdown(
    steps: int = 8,
    warmup: int = 2,
    batch_size: int | None = None,
    root: str | None = None,
    overrides=(),
    device: str = "cpu",
    precision: str | None = None,
    preset: str | None = None,
    synced: bool | None = None,
) -> dict:
    """Median milliseconds per step of each part of a pretraining step, steps/s and voxels/s.

    ``root``: where the synthetic preset is generated (a temporary folder by default); ``synced``:
    the profiler waits for the GPU at span boundaries (None: on CUDA)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from evcmae.tools.pretrain import build, config_dir

    device = check_device(device)
    defaults = DEFAULTS[device]
    preset = preset or defaults["preset"]
    batch_size = batch_size or defaults["batch_size"]
    precision = precision or defaults["precision"]
    root = Path(root or tempfile.mkdtemp(prefix="evcmae_bench_"))
    synced = device == "cuda" if synced is None else synced
    profiler = "{_target_: evcmae.pretrain.benchmarks.SyncedSimpleProfiler}" if synced else "simple"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir("pretrain"), version_base="1.3"):
        cfg = compose(
            "pretrain",
            overrides=[
                f"paths.root_dir={root}",
                f"paths.output_dir={root}/run",
                f"data={preset}",
                f"data.root={root}/{preset}",
                f"data.batch_size={batch_size}",
                f"data.num_workers={defaults['num_workers']}",
                f"torch_threads={defaults['threads']}",
                f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
                "trainer.devices=1",
                f"trainer.precision={precision}",
                f"trainer.max_steps={steps + warmup}",
                "trainer.limit_val_batches=0",
                "final_validation=false",
                "~logger",
                "~callbacks",
                "++trainer.enable_progress_bar=false",
                "++trainer.enable_checkpointing=false",
                f"++trainer.profiler={profiler}",
                *defaults["extra"],
                *overrides,
            ],
        )
    voxels = _CountVoxels()
    datamodule, module, trainer = build(cfg, [voxels])
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_s = time.perf_counter() - start
    spans = trainer.profiler.recorded_durations

    def durations(name: str) -> list[float]:
        key = next((k for k in spans if k == name or k.endswith(name)), None)
        return list(spans[key][warmup:]) if key else []

    def part(name: str):
        return _median_ms(durations(name))

    out = {"data": None, "voxelization": None}
    out.update({name: part(f"[evcmae]{name}") for name in module_parts(module.objectives)})
    out["backward"] = part("Strategy]SingleDeviceStrategy.backward")
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
    out["ema"] = part("[evcmae]ema")
    out["training_step"] = part("Strategy]SingleDeviceStrategy.training_step")
    out["batch"] = part("run_training_batch")  # the whole step: forward, backward, optimizer, EMA

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

    step_ms = out["batch"] or out["training_step"]
    voxels_per_step = statistics.median(voxels.counts[warmup:]) if len(voxels.counts) > warmup else None
    return {
        **device_info(device),
        "preset": preset,
        "batch_size": batch_size,
        "precision": precision,
        "steps": steps,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
        "profiler": type(trainer.profiler).__name__,
        "grid": list(collate.voxelizer.spatial_shape),
        "steps_per_s": round(1e3 / step_ms, 3) if step_ms else None,
        "voxels_per_step": voxels_per_step,
        "voxels_per_s": round(voxels_per_step * 1e3 / step_ms) if step_ms and voxels_per_step else None,
        "fit_s": round(fit_s, 1),
        "nonfinite_steps": module.nonfinite_total,
        "ms": out,
    }


def bench_pretrain(device: str = "cpu", quick: bool = False, **kwargs) -> dict:
    """``evcmae-bench pretrain``: steps/s, voxels/s and the step breakdown. ``quick``: two steps of
    the tiny preset, to check the wiring."""
    if quick:
        kwargs = {"steps": 2, "warmup": 1, "preset": "tiny", "batch_size": 2, **kwargs}
    result = bench_step_breakdown(device=device, **kwargs)
    return {"benchmark": "pretrain", **result}
