"""evcmae-bench: speed benchmarks, printed as a table or as one JSON object (--json)."""

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
    "backbone": "evcmae.pretrain.benchmarks:bench_backbone",
    "detector": "evcmae.finetune.benchmarks:bench_detector",
    "coco": "evcmae.finetune.coco_benchmark:bench_coco",
}


def _run(name: str) -> dict:
    """Run one benchmark; whatever it prints (Lightning, profilers) goes to stderr, so that stdout
    carries only the result."""
    module, func = BENCHMARKS[name].split(":")
    with contextlib.redirect_stdout(sys.stderr):
        return getattr(importlib.import_module(module), func)()


def machine() -> dict:
    import os

    return {
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


@entry("evcmae-bench")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="evcmae-bench", description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHMARKS) + ["all"])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.name == "all":
        result = {"machine": machine(), **{name: _run(name) for name in BENCHMARKS}}
    else:
        result = _run(args.name)
    if args.json:
        print(json.dumps(result))
    else:
        rows = result.items() if args.name != "all" else ((k, v) for k, v in result.items())
        for key, value in rows:
            print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
