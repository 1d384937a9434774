"""Per-window detector latency: sparse encoder input against stacked histograms.

One recurrent step (encoder or histogram -> RVT -> PAFPN -> YOLOX decode, no NMS), eval mode,
batch 1, a 50 ms window of the synthetic street (the first training recording of the preset that
matches the resolution, generated in memory), median of ``repeats`` timed runs after ``warmup``.
Input preparation (voxelization, histogram) is not timed: both come from the data loader.

Rows: input (sparse, histogram) x RVT size x precision (float32, or float16 under autocast) x mode
(eager, or ``torch.compile`` of the dense detector: RVT, PAFPN and head; the sparse encoder stays
eager, since spconv's kernels are opaque to the compiler). A compile that fails is recorded in its
row, with the error, and the run goes on. On the CPU one thread by default (the figure a 2-core
machine can stand behind); on CUDA synchronised around every run.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path
from typing import Sequence

import torch

from evcmae.events.benchmarks import check_device, device_info, device_sync, median_ms

AUTOCAST = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
# A compile takes tens of seconds per model on a GPU machine (minutes on a 2-core CPU), so by
# default only the float16 rows are compiled: the fastest configuration is the one worth knowing.
DEFAULTS = {
    "cpu": {"sizes": ("tiny",), "precisions": ("float32",), "modes": ("eager",), "threads": 1},
    "cuda": {
        "sizes": ("tiny", "base"),
        "precisions": ("float32", "float16"),
        "modes": ("eager", "compile"),
        "compile_precisions": ("float16",),
    },
}


def _window(root: Path | None, width: int, height: int, t0: int = 450_001, t1: int = 500_001):
    """Events of [t0, t1): from the first training recording under ``root`` if there is one, else
    synthesised in memory (the demo street at 640x360, the tiny one at 320x180)."""
    from evcmae.events.h5 import H5EventFile

    files = sorted((Path(root) / "train").glob("*_td.h5")) if root else []
    if files:
        with H5EventFile(files[0]) as f:
            return f.read_time_window(t0, t1)
    from evcmae.events.synth import synthesize

    preset = "demo" if (width, height) == (640, 360) else "tiny"
    return synthesize(preset, 0, "train", 0).events.time_window(t0, t1)


def _dense_step(model):
    def step(x):
        features, _ = model.detector.forward_backbone(x, None)
        return model.detector.forward_detect(features)

    return step


def _time_row(model, x, device, precision, mode, repeats, warmup) -> dict:
    dense = _dense_step(model)
    row = {"precision": precision, "mode": mode}
    if mode == "compile":
        start = time.perf_counter()
        try:
            dense = torch.compile(dense)
            with torch.no_grad(), _autocast(device, precision):
                dense(model.encoder(x) if model.encoder is not None else x.float())
        except Exception as exc:  # a backend that cannot compile is a result, not a crash
            row.update(ms=None, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            return row
        row["compile_s"] = round(time.perf_counter() - start, 1)

    def run():
        with torch.no_grad(), _autocast(device, precision):
            dense(model.encoder(x) if model.encoder is not None else x.float())

    row["ms"] = round(median_ms(run, repeats, warmup, sync=device_sync(device)), 2)
    return row


def _autocast(device: str, precision: str):
    dtype = AUTOCAST[precision]
    return torch.autocast(device, dtype=dtype) if dtype else contextlib.nullcontext()


def bench_detector(
    width: int = 640,
    height: int = 360,
    size: str | None = None,
    repeats: int = 5,
    warmup: int = 2,
    root: str | Path | None = None,
    threads: int | None = -1,
    device: str = "cpu",
    sizes: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    modes: Sequence[str] | None = None,
    compile_precisions: Sequence[str] | None = None,
    quick: bool = False,
) -> dict:
    """{"rows": [...], "sparse_ms", "histogram_ms", ...}: one row per input x size x precision x
    mode (compiled only for ``compile_precisions``, default: every precision on CPU, float16 on
    CUDA); ``sparse_ms``/``histogram_ms`` repeat the first size's eager float32 rows. ``size``: one
    RVT size (same as ``sizes=[size]``); ``quick``: 320x180, one repeat, to check the wiring."""
    from evcmae.events.histogram import stacked_histogram
    from evcmae.events.voxelize import Voxelizer
    from evcmae.finetune.encoder import EventDetector

    device = check_device(device)
    defaults = DEFAULTS[device]
    if quick:
        width, height, repeats, warmup = 320, 180, 1, 0
    sizes = tuple([size] if size else sizes or defaults["sizes"])
    precisions = tuple(precisions or defaults["precisions"])
    modes = tuple(modes or defaults["modes"])
    compile_precisions = tuple(compile_precisions or defaults.get("compile_precisions", precisions))
    unknown = (set(precisions) | set(compile_precisions)) - set(AUTOCAST)
    if unknown or not set(modes) <= {"eager", "compile"}:
        raise ValueError(
            f"precisions must be among {sorted(AUTOCAST)} and modes among eager/compile: {precisions}, {modes}"
        )
    threads = defaults.get("threads") if threads == -1 else threads
    if threads:
        torch.set_num_threads(threads)
    ev = _window(root, width, height)
    voxelizer = Voxelizer(width, height)
    voxels = voxelizer([ev], [450_001])
    hist = stacked_histogram(ev.x, ev.y, ev.t, ev.p, height, width)[None]
    inputs = {"sparse": voxels.to(device), "histogram": hist.to(device)}
    rows = []
    for size_name in sizes:
        for name, x in inputs.items():
            kwargs = {"grid": voxelizer.spatial_shape} if name == "sparse" else {}
            model = EventDetector(name, size_name, 3, height, width, **kwargs).to(device).eval()
            for precision in precisions:
                for mode in modes:
                    if mode == "compile" and precision not in compile_precisions:
                        continue
                    row = {"input": name, "size": size_name}
                    row.update(_time_row(model, x, device, precision, mode, repeats, warmup))
                    rows.append(row)
            del model
            torch._dynamo.reset()  # compiled graphs of one model must not pile up across models
    result = {
        "benchmark": "detector",
        **device_info(device),
        "threads": torch.get_num_threads(),
        "input_hw": [height, width],
        "batch_size": 1,
        "events": len(ev),
        "voxels": len(voxels),
        "repeats": repeats,
        "compile_scope": "RVT + PAFPN + YOLOX head (the sparse encoder runs eager)",
        "rows": rows,
    }
    for name in inputs:
        first = next(
            (r for r in rows if r["input"] == name and r["mode"] == "eager" and r["precision"] == "float32"), None
        )
        if first is not None:
            result[f"{name}_ms"] = first["ms"]
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(bench_detector(), indent=2))


# -- a fine-tuning step ------------------------------------------------------------------------
# The module's spans (finetune/module.py ``_section``), summed over a step's windows by the profiler
# per call: a step has seq_len encoder and RVT calls and one head call.
STEP_PARTS = ("encoder", "rvt", "head_and_loss")
STEP_DEFAULTS = {
    "cpu": {"preset": "study", "batch_size": 2, "precision": "32-true", "threads": 1},
    "cuda": {"preset": "bench", "batch_size": 8, "precision": "16-mixed", "threads": "null"},
}


def _fold_against_spconv_dense(encoder, voxels, repeats: int) -> dict:
    """Forward + backward of densifying the encoder's output map: spconv's ``dense()`` (then a
    reshape) against ``fold_time_into_channels``, on the same map, median ms of ``repeats``."""
    from evcmae.finetune.encoder import fold_time_into_channels

    out = encoder.backbone(voxels, until=encoder.output)[encoder.output]
    features = out.features.detach().requires_grad_(True)
    x = out.replace_feature(features)
    upstream = torch.randn_like(fold_time_into_channels(x))

    def spconv_dense():
        d = x.dense()
        return d.reshape(d.shape[0], -1, *d.shape[3:])

    sync = device_sync(features.device.type)
    ours = median_ms(lambda: torch.autograd.grad(fold_time_into_channels(x), features, upstream), repeats, 1, sync)
    theirs = median_ms(lambda: torch.autograd.grad(spconv_dense(), features, upstream), repeats, 1, sync)
    return {
        "sites": int(features.shape[0]),
        "ours_ms": round(ours, 2),
        "spconv_dense_ms": round(theirs, 2),
        "speedup": round(theirs / ours, 2),
    }


def bench_finetune_step(
    steps: int = 6,
    warmup: int = 2,
    root: str | None = None,
    device: str = "cpu",
    preset: str | None = None,
    batch_size: int | None = None,
    overrides=(),
) -> dict:
    """Median ms per fine-tuning step of each part (encoder, RVT, head and loss: summed over the
    step's calls; backward, optimizer; the whole batch), with the densifying comparison.

    ``root``: where the synthetic preset is generated (a temporary folder by default). The
    study's CPU scale by default: the 'study' preset, one residual block per encoder stage."""
    import tempfile

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from evcmae.tools.pretrain import build, config_dir

    device = check_device(device)
    defaults = STEP_DEFAULTS[device]
    preset = preset or defaults["preset"]
    batch_size = batch_size or defaults["batch_size"]
    root = Path(root or tempfile.mkdtemp(prefix="evcmae_bench_"))
    profiler = "{_target_: evcmae.pretrain.benchmarks.SyncedSimpleProfiler}" if device == "cuda" else "simple"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir("finetune"), version_base="1.3"):
        cfg = compose(
            "finetune",
            overrides=[
                f"paths.root_dir={root}",
                f"paths.output_dir={root}/run",
                f"paths.data_dir={root}",
                f"data={preset}",
                f"data.batch_size={batch_size}",
                f"torch_threads={defaults['threads']}",
                *(["backbone.blocks=[1,1,1,1]"] if device == "cpu" else []),
                f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
                "trainer.devices=1",
                f"trainer.precision={defaults['precision']}",
                f"trainer.max_steps={steps + warmup}",
                "trainer.limit_val_batches=0",
                "model.bn_recalibration_batches=0",
                "~logger",
                "~callbacks",
                "++trainer.enable_progress_bar=false",
                "++trainer.enable_checkpointing=false",
                f"++trainer.profiler={profiler}",
                *overrides,
            ],
        )
    datamodule, module, trainer = build(cfg)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_s = time.perf_counter() - start
    spans = trainer.profiler.recorded_durations
    seq_len = int(cfg.data.seq_len)

    def durations(name: str) -> list[float]:
        key = next((k for k in spans if k == name or k.endswith(name)), None)
        return list(spans[key]) if key else []

    def per_step(name: str, calls: int) -> float | None:
        values = durations(name)[warmup * calls :]
        sums = [sum(values[i : i + calls]) for i in range(0, len(values) - calls + 1, calls)]
        return round(statistics.median(sums) * 1e3, 2) if sums else None

    ms = {
        "encoder": per_step("[evcmae]encoder", seq_len),
        "rvt": per_step("[evcmae]rvt", seq_len),
        "head_and_loss": per_step("[evcmae]head_and_loss", 1),
        "training_step": per_step(f"Strategy]{type(trainer.strategy).__name__}.training_step", 1),
        "backward": per_step(f"Strategy]{type(trainer.strategy).__name__}.backward", 1),
        "batch": per_step("run_training_batch", 1),
    }
    if ms["batch"] and ms["training_step"] and ms["backward"]:
        ms["optimizer_and_rest"] = round(ms["batch"] - ms["training_step"] - ms["backward"], 2)
    dense = None
    encoder = module.model.encoder
    if encoder is not None:
        batch = next(iter(datamodule.train_dataloader()))
        voxels = next(x for x in batch.inputs if len(x)).to(module.device)
        dense = _fold_against_spconv_dense(encoder, voxels, repeats=5)
    return {
        "benchmark": "finetune",
        **device_info(device),
        "preset": preset,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "precision": defaults["precision"],
        "steps": steps,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
        "steps_per_s": round(1e3 / ms["batch"], 3) if ms["batch"] else None,
        "fit_s": round(fit_s, 1),
        "ms": ms,
        "densify": dense,
    }


def bench_finetune(device: str = "cpu", quick: bool = False, **kwargs) -> dict:
    """``evcmae-bench finetune``: where a fine-tuning step's time goes. ``quick``: two steps of the
    tiny preset, to check the wiring."""
    if quick:
        kwargs = {"steps": 2, "warmup": 1, "preset": "tiny", **kwargs}
    return bench_finetune_step(device=device, **kwargs)
