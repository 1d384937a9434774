"""A diagnostic after the runs (not pre-registered): evaluate a checkpoint trained at one BatchNorm
eps with another set on the detector's neck and head at evaluation only, to tell how much of eps
1e-3's effect on the collapsed run is the evaluation-time scaling and how much is training.

    python results/bn_eps/eval_eps.py CKPT EPS OUT [SPLIT]     # from the directory the runs ran in
"""

import sys

import evcmae.tools.evaluate as evaluate
from evcmae.backbones.batchnorm import set_batchnorm_eps


def main(checkpoint: str, eps: float, out: str, split: str = "val") -> None:
    load = evaluate.load_checkpoint

    def load_with_eps(*args, **kwargs):
        module, datamodule = load(*args, **kwargs)
        print(f"eps {eps} on {set_batchnorm_eps(module.model.detector, eps)} BatchNorm layers")
        return module, datamodule

    evaluate.load_checkpoint = load_with_eps
    metrics = evaluate.evaluate_checkpoint(checkpoint, split=split, out=out)["metrics"]
    print({k: metrics.get(k) for k in ("AP", "AP50", "AP_class_agnostic")})


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3], *sys.argv[4:])
