# Checkpoint selection on 4 against 16 val recordings (docs/study.md, "How many val recordings").
# Run from the repository root (the runs here went two at a time); data/study is generated on first use (the 'study' preset, 16 val
# and 16 test recordings). Five scratch runs at 10 % labels, 900 steps, the study's fine-tuning
# command with every validation's checkpoint kept: two labelled subsets (data.seed 2 and 3), each
# with two detector initialisations (seed = data.seed, and seed = 10 + data.seed), and subset 2 with
# a third (seed 22).
set -euo pipefail
common=(paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study model.bn_recalibration_batches=20 model.encoder_freeze_steps=0 model.encoder_mode=full data.label_fraction_mode=recordings trainer.max_steps=900 trainer.val_check_interval=150 optim.lr=0.002 data.label_fraction=0.1 validate_best=false callbacks.validations.keep=true)
for s in 2 3; do
  d=outputs/sel/scratch-labels0.1-seed$s
  evcmae-finetune "${common[@]}" seed=$s record.root=$d/record hydra.run.dir=$d
  d=outputs/sel/scratch-labels0.1-data$s-init1$s
  evcmae-finetune "${common[@]}" seed=1$s data.seed=$s record.root=$d/record hydra.run.dir=$d
done
d=outputs/sel/scratch-labels0.1-data2-init22
evcmae-finetune "${common[@]}" seed=22 data.seed=2 record.root=$d/record hydra.run.dir=$d
# The first 4 val and test recordings (the split of the earlier studies), and val recordings 5-16
# (which score a choice made on the first 4 without reusing them): folders of links.
mkdir -p data/study_first4/val data/study_first4/test data/study_val_last12/val
for split in val test; do
  for i in 000 001 002 003; do
    for f in "_td.h5" "_bbox.npy"; do ln -sf "../../study/$split/synth_${split}_${i}$f" "data/study_first4/$split/"; done
  done
done
for i in $(seq -f "%03g" 4 15); do
  for f in "_td.h5" "_bbox.npy"; do ln -sf "../../study/val/synth_val_${i}$f" "data/study_val_last12/val/"; done
done
python results/selection/score_checkpoints.py results/selection/evaluations.json outputs/sel/scratch-labels0.1-*
