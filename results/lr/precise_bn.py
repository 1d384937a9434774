"""A fine-tuned checkpoint with every BatchNorm's statistics re-estimated on the labelled training
data (results/lr/README.md): were a low val AP the running statistics' fault (BatchNorm at batch 2
keeps an average of the last few batches), the same weights would score higher with statistics
averaged over the whole labelled set.

    python results/lr/precise_bn.py RUN/checkpoints/last.ckpt OUT.ckpt [BATCHES]
    evcmae-evaluate checkpoint=OUT.ckpt split=val out=...

The detector runs in training mode, without gradients, over up to BATCHES training batches (at
10 % labels one pass over the labelled recordings is 13), its recurrent states carried from
chunk to chunk as in training; each BatchNorm keeps the plain mean over all of them. The
checkpoint is copied with only its state_dict replaced.
"""

import sys

import torch

from evcmae.backbones.batchnorm import cumulative_batchnorm
from evcmae.tools.evaluate import load_checkpoint


@torch.no_grad()
def reestimate(module, loader, batches: int) -> int:
    module.train()
    states, labelled = None, 0
    with cumulative_batchnorm(module):
        for b, batch in enumerate(loader):
            if b >= batches:
                break
            feats, where, states = module._run_chunk(batch, states)
            if feats is not None:  # the neck and head run, as in training, on labelled windows only
                module.model.forward_detect(feats, [batch.targets[step][sample] for step, sample in where])
                labelled += 1
    module.eval()
    return labelled


def main(checkpoint: str, out: str, batches: int = 100) -> None:
    torch.set_num_threads(1)
    module, datamodule = load_checkpoint(checkpoint)
    datamodule.prepare_data()
    labelled = reestimate(module, datamodule.train_dataloader(), batches)
    content = torch.load(checkpoint, map_location="cpu", weights_only=False)
    content["state_dict"] = dict(module.state_dict())
    torch.save(content, out)
    print(f"{out}: BatchNorm statistics from {labelled} labelled training batches")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 100)
