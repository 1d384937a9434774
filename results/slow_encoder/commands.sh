# Run from the clone results/new_seeds ran in (/tmp/abl, code 6f169d2: outputs/abl_fc/pretrain/full is
# the full method's teacher). results/new_seeds' command with one change, the encoder trained at a
# tenth of the detector's rate (model.encoder_mode=lr_scale model.lr_scale=0.1 in place of
# model.encoder_mode=full), for scratch and the full method alike. Each seed's two runs together,
# seeds in order; a seed starts only before 15:15 UTC (notes.md).
FT="evcmae-finetune paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study model.bn_recalibration_batches=20 model.encoder_freeze_steps=0 model.encoder_mode=lr_scale model.lr_scale=0.1 data.label_fraction_mode=timestamps trainer.max_steps=600 trainer.val_check_interval=150 optim.lr=0.002 data.label_fraction=0.1 validate_best=false"
for SEED in 6 7 8 9 10; do
if [ "$(date -u +%H%M)" -ge 1515 ]; then echo "seed $SEED not started: past 15:15 UTC"; break; fi
eval $FT seed=$SEED record.root=outputs/slow_encoder/scratch-seed$SEED/record hydra.run.dir=outputs/slow_encoder/scratch-seed$SEED &
eval $FT model.pretrained=outputs/abl_fc/pretrain/full seed=$SEED record.root=outputs/slow_encoder/full-seed$SEED/record hydra.run.dir=outputs/slow_encoder/full-seed$SEED &
wait
for RUN in outputs/slow_encoder/{scratch,full}-seed$SEED; do
evcmae-evaluate checkpoint=$(ls $RUN/checkpoints/best-step=*.ckpt) split=test out=$RUN/eval_test
done
done
