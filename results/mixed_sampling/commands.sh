# Scratch at 100 % labels with RVT's mixed sampling, against results/fix_full's stream-sampled
# scratch runs at the same seeds (same command but data.sampling). Run from a clone whose data/study
# holds the study preset (evcmae-study generates it), code ea633a0 (stream was then the default).
for seed in 0 1; do
  D=outputs/mixed/finetune/scratch-labels1-seed$seed
  evcmae-finetune paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study model.bn_recalibration_batches=20 model.encoder_freeze_steps=0 model.encoder_mode=full data.sampling=mixed data.label_fraction_mode=recordings trainer.max_steps=900 trainer.val_check_interval=150 optim.lr=0.002 data.label_fraction=1.0 seed=$seed validate_best=false record.root=$D/record hydra.run.dir=$D
  evcmae-evaluate "checkpoint=$D/checkpoints/best-step=*.ckpt" split=test out=$D/eval_test
  evcmae-evaluate "checkpoint=$D/checkpoints/best-step=*.ckpt" split=test eval.protocol=yolox out=$D/eval_test_yolox
done
