"""Why the no_reconstruction seed-0 detector collapsed: for each fine-tuning checkpoint given, on 5
training batches of its own labelled subset (eval mode, seed 0), the last RVT stage's ConvLSTM
output gates and the stride-32 features the PAFPN's lateral conv reads.

    python results/abl_terms/diagnose_collapse.py CKPT [CKPT ...]

Prints per checkpoint: stage-4 channels whose mean output gate is below 0.01 (closed), the share of
gate values below 0.01, stride-32 feature channels with std below 1e-2, their effective rank
(exp of the entropy of the variance shares), and evcmae-evaluate's near-constant BatchNorm check.
A diagnostic kept beside the numbers it produced (docs/study.md), not part of the package."""

import sys

import torch

from evcmae.backbones.batchnorm import near_constant_channels
from evcmae.tools.evaluate import load_checkpoint


def diagnose(path: str, batches: int = 5) -> dict:
    torch.manual_seed(0)
    module, dm = load_checkpoint(path)
    dm.prepare_data()
    dm.setup("fit")
    lstm = module.model.detector.backbone.stages[-1].lstm
    lateral = module.model.detector.fpn.lateral[1].conv
    gates, features = [], []

    def gate_hook(cell, inputs, _):
        x, state = inputs[0], inputs[1] if len(inputs) > 1 else None
        h_prev = torch.zeros_like(x) if state is None else state[0]
        mix = cell.conv1x1(torch.cat((x, h_prev), 1))
        out_gate = torch.sigmoid(mix[:, 2 * cell.dim : 3 * cell.dim])
        gates.append(out_gate)

    hooks = [
        lstm.register_forward_hook(gate_hook),
        lateral.register_forward_hook(lambda m, i, o: features.append(i[0])),
    ]
    states = None
    with torch.no_grad():
        for b, batch in enumerate(dm.train_dataloader()):
            if b >= batches:
                break
            feats, _, states = module._run_chunk(batch, states)
            if feats is not None:
                module.model.forward_detect(feats)
    for h in hooks:
        h.remove()
    out_gate = torch.cat(gates)
    x = torch.cat(features).transpose(0, 1).flatten(1)
    centred = x - x.mean(1, keepdim=True)
    share = torch.linalg.svdvals(centred) ** 2
    share = share / share.sum()
    return {
        "closed_output_gates": f"{int((out_gate.mean((0, 2, 3)) < 0.01).sum())} of {out_gate.shape[1]}",
        "gate_values_below_0.01": round(float((out_gate < 0.01).float().mean()), 3),
        "stride32_channels_std_below_1e-2": f"{int((x.std(1) < 1e-2).sum())} of {x.shape[0]}",
        "stride32_effective_rank": round(float(torch.exp(-(share * (share + 1e-12).log()).sum())), 2),
        "near_constant_batchnorm": near_constant_channels(module.model),
    }


if __name__ == "__main__":
    torch.set_num_threads(1)
    for ckpt in sys.argv[1:]:
        print(ckpt, diagnose(ckpt), flush=True)
