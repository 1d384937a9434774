"""evcmae-convert-rvt: an RVT checkpoint (uzh-rpg/RVT) -> an evcmae fine-tuning checkpoint.

    evcmae-convert-rvt rvt-t.ckpt rvt-t_evcmae.ckpt                 # dataset from the classes: 2 gen1, 3 gen4
    evcmae-convert-rvt rvt-b-etram.ckpt out.ckpt --dataset etram3   # any conf/finetune/data config

Every RVT tensor is mapped by name and shape onto the histogram detector, strictly (tiny, small
and base), and the command prints "loaded X of Y". The output is an ordinary fine-tuning
checkpoint: evcmae-evaluate checkpoint=OUT.ckpt data.root=..., evcmae-detect, evcmae-export, and
evcmae-finetune model=histogram data=... model.pretrained=OUT.ckpt all take it (and the RVT file
itself). Exit status 0 on success, 2 when the checkpoint does not map (the message says why).
"""

from __future__ import annotations

import argparse
import sys

from evcmae.tools.cli import entry


@entry("evcmae-convert-rvt")
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="evcmae-convert-rvt",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("rvt_checkpoint", help="RVT's .ckpt (state_dict keys under 'mdl.')")
    ap.add_argument("out", help="the evcmae checkpoint to write")
    ap.add_argument(
        "--dataset",
        default=None,
        help="data config the detector was trained on (gen1, gen4, etram, etram3, ...); default from the class count",
    )
    args = ap.parse_args(argv)
    from evcmae.finetune.rvt_checkpoint import RVTCheckpointError, convert

    try:
        report = convert(args.rvt_checkpoint, args.out, args.dataset)
    except (RVTCheckpointError, FileNotFoundError) as exc:
        print(f"evcmae-convert-rvt: {exc}", file=sys.stderr)
        return 2
    print(f"evcmae: wrote {report['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
