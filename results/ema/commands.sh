# The weight-EMA pilot (results/ema/README.md), run from the repository root at commit cb038c1.
# Four scratch runs at 10 % labels on the same labelled pair (synth_train_000 + 002: the subset
# seeds 2 and 4 draw), the study's fine-tuning command plus the EMA and kept checkpoints.
for s in 2 4; do
evcmae-finetune paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study model.bn_recalibration_batches=20 model.encoder_freeze_steps=0 model.encoder_mode=full data.label_fraction_mode=recordings trainer.max_steps=900 trainer.val_check_interval=150 optim.lr=0.002 data.label_fraction=0.1 seed=$s validate_best=false callbacks.validations.keep=true callbacks.weight_ema.horizon=0.1 record.root=outputs/ema/scratch-h0.1-seed$s/record hydra.run.dir=outputs/ema/scratch-h0.1-seed$s
done
for s in 1004 2004; do
evcmae-finetune paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study model.bn_recalibration_batches=20 model.encoder_freeze_steps=0 model.encoder_mode=full data.label_fraction_mode=recordings trainer.max_steps=900 trainer.val_check_interval=150 optim.lr=0.002 data.label_fraction=0.1 seed=$s data.subset_seed=4 validate_best=false callbacks.validations.keep=true callbacks.weight_ema.horizon=0.1 record.root=outputs/ema/scratch-h0.1-seed$s/record hydra.run.dir=outputs/ema/scratch-h0.1-seed$s
done
# The live weights of every validation, scored on val (the logged val/* are the EMA's):
for r in outputs/ema/scratch-*/; do for n in 150 300 450 600 750 900; do
evcmae-evaluate checkpoint=$r/checkpoints/step=$n.ckpt split=val out=outputs/ema/live/$(basename $r)-$n
done; done
python results/ema/collect.py outputs/ema > results/ema/val_curves.json
