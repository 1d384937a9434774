"""Per-window detector latency: sparse encoder input against stacked histograms.

One recurrent step (encoder or histogram -> RVT -> PAFPN -> YOLOX decode), eval mode, batch 1,
tiny RVT, a 640x360 synthetic window (the demo preset's first training window), median of
``repeats`` timed runs after ``warmup``. On CPU with one thread (the figure a 2-core machine can
stand behind); on CUDA as well when a GPU is there, synchronised around every run. Input
preparation (voxelization, histogram) is not timed: both come from the data loader.
"""

from __future__ import annotations

from pathlib import Path

import torch

from evcmae.events.benchmarks import median_ms


def _window(root: Path, width: int, height: int):
    from evcmae.events.h5 import H5EventFile

    files = sorted((root / "train").glob("*_td.h5"))
    if not files:
        from evcmae.events.synth import generate

        generate(root, "demo", 0)
        files = sorted((root / "train").glob("*_td.h5"))
    with H5EventFile(files[0]) as f:
        return f.read_time_window(450_001, 500_001)


def bench_detector(
    width: int = 640,
    height: int = 360,
    size: str = "tiny",
    repeats: int = 5,
    warmup: int = 2,
    root: str | Path = "data/demo",
    threads: int = 1,
) -> dict:
    """{"sparse_ms", "histogram_ms", "device", ...}; CUDA figures under "cuda_*" when available."""
    from evcmae.events.histogram import stacked_histogram
    from evcmae.events.voxelize import Voxelizer
    from evcmae.finetune.encoder import EventDetector

    torch.set_num_threads(threads)
    ev = _window(Path(root), width, height)
    voxelizer = Voxelizer(width, height)
    voxels = voxelizer([ev], [450_001])
    hist = stacked_histogram(ev.x, ev.y, ev.t, ev.p, height, width)[None]
    models = {
        "sparse": EventDetector("sparse", size, 3, height, width, grid=voxelizer.spatial_shape),
        "histogram": EventDetector("histogram", size, 3, height, width),
    }
    result = {
        "device": "cpu",
        "threads": threads,
        "size": size,
        "input_hw": [height, width],
        "events": len(ev),
        "voxels": len(voxels),
        "repeats": repeats,
    }
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for name, model in models.items():
            model = model.to(device).eval()
            x = voxels if name == "sparse" else hist
            if device == "cuda":
                x = x.to("cuda")

            def step(model=model, x=x):
                with torch.no_grad():
                    features, _ = model.forward_backbone(x)
                    model.forward_detect(features)

            key = f"{name}_ms" if device == "cpu" else f"cuda_{name}_ms"
            result[key] = round(
                median_ms(step, repeats, warmup, sync=torch.cuda.synchronize if device == "cuda" else None), 2
            )
        if device == "cuda":
            result["cuda_device"] = torch.cuda.get_device_name(0)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(bench_detector(), indent=2))
