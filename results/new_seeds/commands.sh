# Run from the clone results/same_install ran in (/tmp/abl: outputs/abl_fc/pretrain/full is the full
# method's teacher). Each seed's two runs together, seeds in order.
FT="evcmae-finetune paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study model.bn_recalibration_batches=20 model.encoder_freeze_steps=0 model.encoder_mode=full data.label_fraction_mode=timestamps trainer.max_steps=600 trainer.val_check_interval=150 optim.lr=0.002 data.label_fraction=0.1 validate_best=false"
for SEED in 6 7 8 9 10 11 12; do  # seeds 10+ while time allowed: started by 12:35 UTC, stopped at 12:55 (notes.md)
eval $FT seed=$SEED record.root=outputs/new_seeds/scratch-seed$SEED/record hydra.run.dir=outputs/new_seeds/scratch-seed$SEED &
eval $FT model.pretrained=outputs/abl_fc/pretrain/full seed=$SEED record.root=outputs/new_seeds/full-seed$SEED/record hydra.run.dir=outputs/new_seeds/full-seed$SEED &
wait
for RUN in outputs/new_seeds/{scratch,full}-seed$SEED; do
evcmae-evaluate checkpoint=$(ls $RUN/checkpoints/best-step=*.ckpt) split=test out=$RUN/eval_test
done
done
