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
