# Scratch fine-tuning at 10 % labels in both label-fraction modes, seeds 0-3, 150 steps; each run's
# val AP is that of its best checkpoint (validate_best), read from csv/version_0/metrics.csv.
# Run from the checkout (the 'study' preset under data/). 2026-12-02, code at 5bb85f1.
for seed in 0 1 2 3; do for mode in recordings timestamps; do
  evcmae-finetune paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null \
    'backbone.blocks=[1,1,1,1]' data=study model.bn_recalibration_batches=20 model.encoder_freeze_steps=0 \
    model.encoder_mode=full data.label_fraction_mode=$mode trainer.max_steps=150 trainer.val_check_interval=50 \
    optim.lr=0.002 data.label_fraction=0.1 seed=$seed validate_best=true \
    record.root=outputs/lfm/$mode-s$seed/record hydra.run.dir=outputs/lfm/$mode-s$seed
done; done
