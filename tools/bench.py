"""evcmae-bench: speed benchmarks, printed as a table or as one JSON object (--json).

    evcmae-bench voxelize --json
    evcmae-bench backbone --device cuda --json          # sparse vs dense Conv3d at 2/5/20 % occupancy
    evcmae-bench pretrain --device cuda                 # steps/s, voxels/s and the step breakdown
    evcmae-bench detector --device cuda --set 'sizes=["base"]' --set 'modes=["eager"]'
    evcmae-bench all --device cuda --json

``--device cuda`` runs the backbone, pretraining and detector benchmarks on the GPU; voxelization
and EVT 3.0 decoding are CPU work wherever they run (the data loader does them). ``--quick`` shrinks
every benchmark to seconds, to check the wiring; its figures mean nothing. ``--set KEY=VALUE``
passes a keyword argument to the benchmark function (VALUE is read as JSON when it parses).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import platform
import sys

from evcmae.tools.cli import entry

# name -> "module:function"; imported lazily so a benchmark's heavy dependencies load only when run.
BENCHMARKS = {
    "voxelize": "evcmae.events.benchmarks:bench_voxelize",
    "evt3": "evcmae.events.benchmarks:bench_evt3",
    "backbone": "evcmae.backbones.benchmarks:bench_backbone",
    "pretrain": "evcmae.pretrain.benchmarks:bench_pretrain",
    "detector": "evcmae.finetune.benchmarks:bench_detector",
    "coco": "evcmae.finetune.coco_benchmark:bench_coco",
    "finetune": "evcmae.finetune.benchmarks:bench_finetune",
}
# Benchmarks of CPU-only work: they take neither --device nor --quick.
CPU_ONLY = {"voxelize", "evt3"}
QUICK_CPU = {"voxelize": {"n_events": 200_000, "repeats": 2}, "evt3": {"n_events": 200_000, "repeats": 2}}


def _run(name: str, device: str = "cpu", quick: bool = False, options: dict | None = None) -> dict:
    """Run one benchmark; whatever it prints (Lightning, profilers) goes to stderr, so that stdout
    carries only the result."""
    module, func = BENCHMARKS[name].split(":")
    kwargs = dict(QUICK_CPU.get(name, {})) if quick else {}
    if name not in CPU_ONLY:
        kwargs.update(device=device, quick=quick)
    kwargs.update(options or {})
    with contextlib.redirect_stdout(sys.stderr):
        return getattr(importlib.import_module(module), func)(**kwargs)


def machine() -> dict:
    import os

    info = {
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(ImportError):
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info.update(gpu=torch.cuda.get_device_name(0), torch_cuda=torch.version.cuda)
    return info


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


@entry("evcmae-bench")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="evcmae-bench", description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", choices=sorted(BENCHMARKS) + ["all"])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the models run (default cpu)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the wiring, the figures mean nothing")
    parser.add_argument(
        "--set", dest="options", action="append", type=_option, default=[], metavar="KEY=VALUE", help="benchmark kwarg"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA device here")
    options = dict(args.options)
    if args.name == "all":
        if options:
            parser.error("--set applies to one benchmark, not to all")
        result = {"machine": machine(), **{n: _run(n, args.device, args.quick) for n in BENCHMARKS}}
    else:
        result = _run(args.name, args.device, args.quick, options)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
