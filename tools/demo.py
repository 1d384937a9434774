"""evcmae-demo: the whole method on the synthetic demo preset, end to end on a CPU.

    evcmae-demo                                   # pretrain -> fine-tune from the teacher -> test
    evcmae-demo pretrain_steps=20 finetune_steps=40 out=outputs/demo
    evcmae-demo preset=tiny                       # the same on the 'tiny' preset, in seconds

1. pretraining (conf/pretrain, data=``preset``) for ``pretrain_steps`` steps, exporting the backbone;
2. fine-tuning (conf/finetune) from the exported teacher for ``finetune_steps`` steps;
3. evaluation of the fine-tuned checkpoint on the test split, printing the summary.

Each stage shows a progress bar (with the current loss while training).

The default step counts keep the run within about 15 minutes on a 2-core machine: enough to
check that every stage runs and hands over to the next, far too few for meaningful AP (RVT
trains for ~400k steps), so fine-tuning uses lr 2e-3 rather than RVT's 1e-4 for batch 2.
``pretrain.X=...``/``finetune.X=...`` pass further Hydra overrides (e.g. ``finetune.optim.lr=null``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from evcmae.tools.cli import entry

DEFAULTS = {"pretrain_steps": 30, "finetune_steps": 60, "out": "outputs/demo", "data_dir": "data", "preset": "demo"}


def _compose(config_name: str, overrides: list[str], output_dir: Path):
    """``config_name`` is the app: pretrain or finetune."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from evcmae.tools.pretrain import config_dir

    with initialize_config_dir(config_dir=config_dir(config_name), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # so ${hydra:runtime.output_dir} resolves
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg["hydra"]
    output_dir.mkdir(parents=True, exist_ok=True)
    return cfg


def run_demo(
    pretrain_steps: int = 30,
    finetune_steps: int = 60,
    out="outputs/demo",
    data_dir="data",
    pretrain_overrides=(),
    finetune_overrides=(),
    preset: str = "demo",
) -> dict:
    from evcmae.tools import finetune as ft
    from evcmae.tools import pretrain as pt
    from evcmae.tools.evaluate import evaluate_checkpoint

    out = Path(out).absolute()
    times = {}
    start = time.perf_counter()
    common = [f"paths.data_dir={Path(data_dir).absolute()}", f"paths.log_dir={out}", "logger=csv"]
    pre_dir = out / "pretrain"
    cfg = _compose(
        "pretrain",
        [
            *common,
            f"data={preset}",
            f"trainer.max_steps={pretrain_steps}",
            *pretrain_overrides,
        ],
        pre_dir,
    )
    pt.run(cfg)
    times["pretrain_s"] = time.perf_counter() - start

    t0 = time.perf_counter()
    ft_dir = out / "finetune"
    cfg = _compose(
        "finetune",
        [
            *common,
            f"data={preset}",
            f"model.pretrained={pre_dir}",
            "model.pretrained_which=teacher",
            f"trainer.max_steps={finetune_steps}",
            f"trainer.val_check_interval={finetune_steps}",
            "validate_best=false",  # the one validation is at the last step; the test split follows
            # 10x RVT's batch-2 rate: a few dozen steps must show some learning
            "optim.lr=0.002",
            *finetune_overrides,
        ],
        ft_dir,
    )
    result = ft.train(cfg)
    times["finetune_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    evaluation = evaluate_checkpoint(
        result["checkpoint"] or ft_dir / "checkpoints" / "last.ckpt", "test", out / "eval_test"
    )
    times["evaluate_s"] = time.perf_counter() - t0
    times["total_s"] = time.perf_counter() - start
    print("evcmae-demo: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    return {"times": times, "metrics": evaluation["metrics"], "eval_dir": evaluation["path"]}


@entry("evcmae-demo")
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    import torch

    torch.set_num_threads(1)
    opts, pre, fine = dict(DEFAULTS), [], []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.startswith("pretrain."):
            pre.append(arg[len("pretrain.") :])
        elif key.startswith("finetune."):
            fine.append(arg[len("finetune.") :])
        elif key in opts:
            opts[key] = type(DEFAULTS[key])(value)
        else:
            raise SystemExit(f"unknown option {arg!r}; known: {sorted(DEFAULTS)}, pretrain.*, finetune.*")
    run_demo(opts["pretrain_steps"], opts["finetune_steps"], opts["out"], opts["data_dir"], pre, fine, opts["preset"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
