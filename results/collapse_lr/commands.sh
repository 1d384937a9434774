# Run from the directory the study ran in (outputs/abl_fc from results/abl_fc's command). LR: 0.002, 0.001, 0.0005.
for LR in 0.002 0.001 0.0005; do
evcmae-finetune paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study model.bn_recalibration_batches=20 model.encoder_freeze_steps=0 model.encoder_mode=full data.label_fraction_mode=timestamps trainer.max_steps=600 trainer.val_check_interval=150 optim.lr=$LR data.label_fraction=0.1 seed=2 model.pretrained=outputs/abl_fc/pretrain/no_frame_contrastive validate_best=false record.root=outputs/collapse_lr/lr$LR/record hydra.run.dir=outputs/collapse_lr/lr$LR
done
# The pilot: scratch at 0.001, seeds 0 and 1 (val only).
for SEED in 0 1; do
evcmae-finetune paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study model.bn_recalibration_batches=20 model.encoder_freeze_steps=0 model.encoder_mode=full data.label_fraction_mode=timestamps trainer.max_steps=600 trainer.val_check_interval=150 optim.lr=0.001 data.label_fraction=0.1 seed=$SEED validate_best=false record.root=outputs/collapse_lr/scratch-lr0.001-seed$SEED/record hydra.run.dir=outputs/collapse_lr/scratch-lr0.001-seed$SEED
done
